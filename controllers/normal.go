package controllers

import (
	"cmp"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// A Secret found changed by someone else more than maxOverwrites times within contestWindow is
// contested: the operator stops re-issuing at each change until the window is over.
const (
	contestWindow = time.Minute
	maxOverwrites = 3
)

// reconcileNormal keeps the Secret filled with a valid token: decide from facts whether a token
// is needed, check what can be checked before spending a grant, obtain it, write it, report.
func (r *MLflowAccessTokenReconciler) reconcileNormal(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (ctrl.Result, error) {
	now := r.now()
	name := obj.SecretNameOrDefault()
	secret, err := r.ownedSecret(ctx, obj, name, r.Client)
	if err != nil {
		return r.failed(ctx, obj, nil, "", authv1alpha1.StageSecretWrite, asFailure(err))
	}
	if secret != nil && secret.DeletionTimestamp != nil {
		return r.releaseDeleted(ctx, obj, secret)
	}
	cur, distrust := r.consumerToken(obj, secret) // trust.go
	t, f := r.resolveTarget(ctx, obj)
	if f != nil {
		return r.failed(ctx, obj, cur, "", authv1alpha1.StageTarget, f)
	}
	inputs := inputsHash(obj, t)
	if r.failureIsHistory(obj, t) {
		// What the last attempt failed on has changed since (the issuer turned Ready, its client
		// secret was rotated): try again now rather than after the backoff.
		obj.Status.FailedAttempts = 0
	}
	d := policy.Decide(r.decideInput(obj, now, cur, inputs))
	keep := func() (ctrl.Result, error) {
		if cur != nil && cur.IssuedFor == inputs {
			// Labels, annotations, the tracking URI or the reported renewal time may have changed
			// (and a Secret written before seals gets its seal).
			if _, err := r.writeConsumer(ctx, obj, t, secret, *cur, d.RenewAt, writeOpts{adopt: true}); err != nil {
				return r.failed(ctx, obj, cur, inputs, authv1alpha1.StageSecretWrite, secretWriteFailure(err, name))
			}
		}
		report(obj, now, cur, d, inputs)
		return requeueAt(earliest(d.Next, r.settleSuperseded(ctx, obj, t)), now), nil
	}
	if !d.Issue {
		return keep()
	}

	// Before spending a token, look at the Secret as the API server has it: the cache may not
	// yet show a token the previous leader (or an earlier process) just wrote, and it keeps only a
	// stub of a Secret whose seal does not hold. When the cache shows the very version this process
	// wrote last, it is not behind: no read needed.
	if !r.written.isLatest(secret) {
		fresh, err := r.ownedSecret(ctx, obj, name, r.APIReader)
		if err != nil {
			return r.failed(ctx, obj, cur, inputs, authv1alpha1.StageIssue, asFailure(err))
		}
		if fresh != nil && (secret == nil || fresh.ResourceVersion != secret.ResourceVersion || tokensecret.IsStub(secret)) {
			secret = fresh
			cur, distrust = r.consumerToken(obj, fresh)
			if d = policy.Decide(r.decideInput(obj, now, cur, inputs)); !d.Issue {
				return keep()
			}
		}
	}
	if distrust != nil {
		// Changed again and again within a minute: another writer keeps overwriting the Secret (a
		// second installation of the operator, with another seal key, would otherwise make both
		// re-issue in a loop). After maxOverwrites re-issues in the minute, back off instead
		// (failed: the retry waits grow) until the minute is over.
		first := obj.Status.SecretOverwrittenAt
		if first == nil || now.Sub(first.Time) >= contestWindow {
			obj.Status.SecretOverwrittenAt, obj.Status.SecretOverwrites = &metav1.Time{Time: now}, 0
		} else if obj.Status.SecretOverwrites >= maxOverwrites {
			return r.failed(ctx, obj, nil, inputs, authv1alpha1.StageSecretWrite, &failure{Reason: authv1alpha1.ReasonSecretContested,
				Message: fmt.Sprintf("Secret %s %s again: %d times within %s; another writer (a second installation of the operator? a tool restoring it?) is overwriting it, and the operator issues at most %d tokens a minute until it stops",
					name, distrust.why, obj.Status.SecretOverwrites+1, now.Sub(first.Time).Round(time.Second), maxOverwrites)})
		}
		obj.Status.SecretOverwrites++
		r.event(obj, corev1.EventTypeWarning, distrust.reason, "Issue", "Secret %s %s; its content is ignored and a new token is issued", name, distrust.why)
	}
	if r.namespaceTerminating(ctx, obj.Namespace) {
		// Its deletion is under way: a new token would only have to be revoked again.
		log.FromContext(ctx).Info("Not obtaining a token: the namespace is being deleted")
		report(obj, now, cur, d, inputs)
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
	}
	if f := r.checkWritable(ctx, obj, t, secret); f != nil {
		return r.failed(ctx, obj, cur, inputs, authv1alpha1.StageSecretWrite, f)
	}

	log.FromContext(ctx).V(1).Info("Obtaining a token", "why", d.Why, "secret", name)
	got, f := r.obtain(ctx, obj, t, cur)
	if f != nil {
		return r.failed(ctx, obj, cur, inputs, authv1alpha1.StageIssue, f)
	}
	st := tokensecret.State{AccessToken: got.AccessToken, IssuedAt: got.IssuedAt, ExpiresAt: got.ExpiresAt, IssuedFor: inputs}
	plan := policy.Schedule(string(obj.UID), policy.Token{IssuedAt: st.IssuedAt, ExpiresAt: st.ExpiresAt}, renewBefore(obj))
	if _, err := r.writeConsumer(ctx, obj, t, secret, st, plan.RenewAt, writeOpts{adopt: true}); err != nil {
		return r.failed(ctx, obj, cur, inputs, authv1alpha1.StageSecretWrite, secretWriteFailure(err, name))
	}
	r.nudgeConsumers(ctx, obj, st) // running pods get the new token at once (nudge.go)
	if old := obj.Status.SecretName; old != "" && old != name {
		r.deleteStale(ctx, obj, old)
	}
	sup := r.supersede(ctx, obj, cur)
	r.afterIssue(ctx, obj, t, got, sup)
	r.honourRequests(obj)
	first := obj.Status.Rotations == 0
	obj.Status.Rotations++
	recordSuccess(obj)
	report(obj, now, &st, policy.Decision{RenewAt: plan.RenewAt}, inputs)
	r.announce(ctx, obj, d.Why, first, st, plan)
	r.checkMLflow(obj, d.Why, st.AccessToken, trackingURI(obj, t), t.allowHTTP, got.access.Endpoint.CABundle)
	// A token that is already due when written (a short one, cut off by the end of its session)
	// still needs a next reconcile: a RequeueAfter ≤ 0 would mean none at all.
	next := plan.RenewAt
	if sup != nil {
		next = earliest(next, sup.RevokeAt)
	}
	return ctrl.Result{RequeueAfter: max(next.Sub(r.now()), minRequeue)}, nil
}

// failureIsHistory reports whether the recorded failure no longer holds: it was about resolving
// the target, which resolves now, or one of the issuer credentials it used changed since.
func (r *MLflowAccessTokenReconciler) failureIsHistory(obj *authv1alpha1.MLflowAccessToken, t *target) bool {
	f := failureOf(obj)
	if f == nil {
		return false
	}
	if obj.Status.LastFailureStage == authv1alpha1.StageTarget {
		return true
	}
	return t.watched && r.credentialsChangedAfter(t, f.At)
}

// minRequeue is the shortest wait before the next renewal of a token written just now.
const minRequeue = time.Second

// decideInput gathers the facts policy.Decide looks at.
func (r *MLflowAccessTokenReconciler) decideInput(obj *authv1alpha1.MLflowAccessToken, now time.Time, cur *tokensecret.State, inputs string) policy.Input {
	in := policy.Input{
		Now:         now,
		Seed:        string(obj.UID),
		RenewBefore: renewBefore(obj),
		Failure:     failureOf(obj),
		Generation:  obj.Generation,
		Backoff:     r.Backoff,
		Requested: pendingRequest(obj, authv1alpha1.AnnotationRenewRequest, obj.Status.LastRenewalRequest) ||
			pendingRequest(obj, authv1alpha1.AnnotationRevokeRequest, obj.Status.LastRevocationRequest),
	}
	if cur != nil {
		// Unknown inputs (the target could not be resolved) do not count as a change.
		in.Token = &policy.Token{IssuedAt: cur.IssuedAt, ExpiresAt: cur.ExpiresAt, InputsMatch: inputs == "" || cur.IssuedFor == inputs}
	}
	return in
}

// checkWritable checks, before a grant is spent, that the token could be written: the template
// is valid, and when the Secret does not exist yet or the last attempt failed to write it, a dry
// run of the write passes (RBAC, admission, quota). A resource that cannot succeed then costs
// Keycloak nothing.
func (r *MLflowAccessTokenReconciler) checkWritable(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, t *target, secret *corev1.Secret) *failure {
	if err := tokensecret.ValidateTemplate(obj.Spec.SecretTemplate); err != nil {
		return &failure{Reason: authv1alpha1.ReasonInvalidSecretTemplate, Message: err.Error(), Err: err}
	}
	failing := failureOf(obj) != nil && obj.Status.LastFailureStage == authv1alpha1.StageSecretWrite
	if secret != nil && !failing {
		return nil
	}
	probe := tokensecret.State{AccessToken: "dry-run", IssuedAt: r.now(), ExpiresAt: r.now(), IssuedFor: "dry-run"}
	if _, err := r.writeConsumer(ctx, obj, t, secret, probe, r.now(), writeOpts{adopt: true, dryRun: true}); err != nil {
		return secretWriteFailure(err, obj.SecretNameOrDefault())
	}
	return nil
}

// writeConsumer writes the token state into the consumer Secret.
func (r *MLflowAccessTokenReconciler) writeConsumer(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, t *target, secret *corev1.Secret, st tokensecret.State, renewAt time.Time, o writeOpts) (*corev1.Secret, error) {
	return r.writeOwned(ctx, obj, secret, obj.SecretNameOrDefault(), func(s *corev1.Secret) bool {
		return tokensecret.Apply(s, obj, st, renewAt, trackingURI(obj, t))
	}, o)
}

// failed records a failed attempt: the failure record, conditions, an event and the next retry
// (exponential backoff computed from the record, so it survives a restart). It returns a nil
// error and its own requeue so that failures do not flood the error log. The Secret is left as it
// is: a valid token in it stays. An unclassified failure (the API server) is returned as an error
// instead, for the work queue to retry, with nothing recorded.
func (r *MLflowAccessTokenReconciler) failed(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, cur *tokensecret.State, inputs string, stage authv1alpha1.FailureStage, f *failure) (ctrl.Result, error) {
	if !f.classified() {
		return ctrl.Result{}, f
	}
	now := r.now()
	recordFailure(obj, now, stage, f)
	d := policy.Decide(r.decideInput(obj, now, cur, inputs))
	setCondition(obj, authv1alpha1.ConditionRenewalFailing, true, f.Reason, failureMessage(f, obj.Status.FailedAttempts, d.RetryAt))
	report(obj, now, cur, d, inputs)
	r.event(obj, corev1.EventTypeWarning, f.Reason, "Issue", "Renewal failed: %s", f.Message)
	log.FromContext(ctx).Info("Could not obtain a token", "reason", f.Reason, "message", f.Message,
		"failedAttempts", obj.Status.FailedAttempts, "retryAt", d.RetryAt)
	if d.Issue {
		// A pending request skips the backoff when it arrives, but the attempt that honoured it
		// just failed: the next one waits for the backoff like any other.
		return requeueAt(d.RetryAt, now), nil
	}
	return requeueAt(d.Next, now), nil
}

// announce tells people about a new token: an event, a log line, and a Warning when the requested
// renewal window could not be honoured.
func (r *MLflowAccessTokenReconciler) announce(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, why policy.Why, first bool, st tokensecret.State, plan policy.Plan) {
	who := ""
	if c := obj.Status.Token; c != nil {
		who = cmp.Or(c.PreferredUsername, c.Subject)
	}
	name := obj.SecretNameOrDefault()
	switch {
	case why == policy.Due && !first:
		// A routine rotation: the same event every time, folded into one series; the times are
		// in status and the Ready condition.
		r.event(obj, corev1.EventTypeNormal, "Renewed", "Renew", "Renewed the token for %q in Secret %s on schedule", who, name)
	default:
		reason, verb := "Renewed", "Renewed"
		if first {
			reason, verb = "Issued", "Issued"
		}
		if why == policy.Requested {
			verb += " on request"
		}
		r.event(obj, corev1.EventTypeNormal, reason, "Issue", "%s token for %q in Secret %s, expires %s, next renewal %s (%s)",
			verb, who, name, stamp(st.ExpiresAt), stamp(plan.RenewAt), why)
	}
	if plan.Note != "" {
		r.event(obj, corev1.EventTypeWarning, authv1alpha1.ReasonRenewalWindowAdjusted, "Schedule", "%s", plan.Note)
	}
	log.FromContext(ctx).Info("Token written", "secret", name, "why", why, "expiresAt", st.ExpiresAt, "renewAt", plan.RenewAt, "rotations", obj.Status.Rotations)
}

// honourRequests records the renew and revoke requests this rotation satisfied.
func (r *MLflowAccessTokenReconciler) honourRequests(obj *authv1alpha1.MLflowAccessToken) {
	if pendingRequest(obj, authv1alpha1.AnnotationRenewRequest, obj.Status.LastRenewalRequest) {
		obj.Status.LastRenewalRequest = obj.Annotations[authv1alpha1.AnnotationRenewRequest]
	}
	if pendingRequest(obj, authv1alpha1.AnnotationRevokeRequest, obj.Status.LastRevocationRequest) {
		obj.Status.LastRevocationRequest = obj.Annotations[authv1alpha1.AnnotationRevokeRequest]
	}
}

func renewBefore(obj *authv1alpha1.MLflowAccessToken) *time.Duration {
	if obj.Spec.RenewBefore == nil {
		return nil
	}
	d := obj.Spec.RenewBefore.Duration
	return &d
}

// requeueAt returns a result that brings the resource back at t (at least a second from now).
func requeueAt(t, now time.Time) ctrl.Result {
	if t.IsZero() {
		return ctrl.Result{}
	}
	return ctrl.Result{RequeueAfter: max(t.Sub(now), minRequeue)}
}
