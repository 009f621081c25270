package controllers

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// This file is what a person reads: the status, its conditions and the wording of conditions
// and events. The conditions Ready, Reconciling and Stalled are derived at every reconcile from
// facts: the token the Secret holds (a token past its expiry is never Ready, whatever else
// happened), the failure record, and the clock.

// report writes what is known into status: the token in the Secret (nil: none), the decision
// taken on it, and the conditions derived from those and the failure record.
// inputs identifies what the token must have been issued for ("" when unknown: the target could
// not be resolved).
func report(obj *authv1alpha1.MLflowAccessToken, now time.Time, tok *tokensecret.State, d policy.Decision, inputs string) {
	s := &obj.Status
	s.SecretName = obj.SecretNameOrDefault()
	s.IssuedAt, s.ExpiresAt, s.Token, s.RenewalTime = nil, nil, nil, nil
	if tok != nil {
		s.IssuedAt, s.ExpiresAt = timePtr(tok.IssuedAt), timePtr(tok.ExpiresAt)
		s.Token = claimsOf(tok.AccessToken)
	}
	switch {
	case !d.RetryAt.IsZero() && s.FailedAttempts > 0:
		s.RenewalTime = timePtr(d.RetryAt)
	case !d.RenewAt.IsZero():
		s.RenewalTime = timePtr(d.RenewAt)
	}

	valid := tok != nil && now.Before(tok.ExpiresAt)
	failing := meta.FindStatusCondition(s.Conditions, authv1alpha1.ConditionRenewalFailing)
	if failing != nil && failing.Status != metav1.ConditionTrue {
		failing = nil
	}
	switch {
	case valid && failing != nil:
		setCondition(obj, authv1alpha1.ConditionReady, true, authv1alpha1.ReasonRenewalFailing, fmt.Sprintf(
			"Renewal failing (%s) but the token in Secret %s is valid until %s", failing.Reason, s.SecretName, stamp(tok.ExpiresAt)))
	case valid:
		setCondition(obj, authv1alpha1.ConditionReady, true, authv1alpha1.ReasonTokenValid, fmt.Sprintf(
			"Token in Secret %s is valid until %s; renewal at %s", s.SecretName, stamp(tok.ExpiresAt), stamp(d.RenewAt)))
	case failing != nil && tok != nil:
		setCondition(obj, authv1alpha1.ConditionReady, false, failing.Reason, fmt.Sprintf(
			"The token expired at %s and no new one could be obtained: %s", stamp(tok.ExpiresAt), failing.Message))
	case failing != nil:
		setCondition(obj, authv1alpha1.ConditionReady, false, failing.Reason, failing.Message)
	case tok != nil:
		setCondition(obj, authv1alpha1.ConditionReady, false, authv1alpha1.ReasonTokenExpired, fmt.Sprintf(
			"The token in Secret %s expired at %s; a new one is being obtained", s.SecretName, stamp(tok.ExpiresAt)))
	default:
		setCondition(obj, authv1alpha1.ConditionReady, false, authv1alpha1.ReasonIssuing, "Obtaining the first token")
	}

	// Stalled: the last attempt failed in a way only a change can fix, even while the Secret still
	// holds a valid token (it will expire, and only a person can prevent that: GitOps tools should
	// say so now). Reconciling: the operator still works towards the spec (no valid token for it
	// yet) and nothing says it cannot get there. Routine rotations and transient failures of a
	// valid token are neither: kstatus reads Current.
	rec := failureOf(obj)
	stalled := failing != nil && rec != nil && !rec.Transient
	if stalled {
		setCondition(obj, authv1alpha1.ConditionStalled, true, failing.Reason, failing.Message)
	} else {
		meta.RemoveStatusCondition(&s.Conditions, authv1alpha1.ConditionStalled)
	}
	current := valid && (inputs == "" || tok.IssuedFor == inputs)
	switch {
	case stalled || current:
		meta.RemoveStatusCondition(&s.Conditions, authv1alpha1.ConditionReconciling)
	case valid:
		setCondition(obj, authv1alpha1.ConditionReconciling, true, authv1alpha1.ReasonReissuing,
			"Obtaining a token for the changed Keycloak, client or grant; the Secret keeps the previous token until then")
	case failing != nil:
		setCondition(obj, authv1alpha1.ConditionReconciling, true, failing.Reason, "Retrying: "+failing.Message)
	default:
		setCondition(obj, authv1alpha1.ConditionReconciling, true, authv1alpha1.ReasonIssuing, "Obtaining a token")
	}
}

// The failure record is typed facts in status, as cert-manager keeps them: when the last attempt
// failed, how many failed in a row, for which generation, whether the failure can pass on its own
// (classified where it happened) and what the attempt was doing. The policy and the controller
// decide from these fields; the conditions only say them in words.

// recordFailure adds a failed attempt to the failure record. A failure for a newer spec than
// the last one, or at another stage (a renewal failure before a deletion's first revocation
// attempt), starts a new count: the backoff starts over.
func recordFailure(obj *authv1alpha1.MLflowAccessToken, now time.Time, stage authv1alpha1.FailureStage, f *failure) {
	s := &obj.Status
	if prev := failureOf(obj); prev == nil || prev.Generation != obj.Generation || (stage == authv1alpha1.StageRevocation) != (s.LastFailureStage == authv1alpha1.StageRevocation) {
		s.FailedAttempts = 0
	}
	s.FailedAttempts++
	s.LastFailureTime = timePtr(now.Truncate(time.Second))
	s.LastFailureGeneration, s.LastFailureKind, s.LastFailureStage = obj.Generation, f.kind(), stage
	if stage != authv1alpha1.StageRevocation {
		setCondition(obj, authv1alpha1.ConditionRenewalFailing, true, f.Reason, f.Message)
	}
}

// recordSuccess clears the failure record.
func recordSuccess(obj *authv1alpha1.MLflowAccessToken) {
	s := &obj.Status
	s.FailedAttempts, s.LastFailureTime, s.LastFailureGeneration, s.LastFailureKind, s.LastFailureStage = 0, nil, 0, "", ""
	setCondition(obj, authv1alpha1.ConditionRenewalFailing, false, authv1alpha1.ReasonRenewalSucceeded, "The last attempt to obtain a token succeeded")
}

// failureOf reads the failure record from status (nil: the last attempt succeeded). A record of
// a version before the typed fields (no kind) counts as needing a change: the longer backoff.
func failureOf(obj *authv1alpha1.MLflowAccessToken) *policy.Failure {
	s := obj.Status
	if s.FailedAttempts == 0 || s.LastFailureTime == nil {
		return nil
	}
	gen := s.LastFailureGeneration
	if gen == 0 {
		gen = s.ObservedGeneration
	}
	return &policy.Failure{At: s.LastFailureTime.Time, Count: s.FailedAttempts, Generation: gen, Transient: s.LastFailureKind == authv1alpha1.FailureTransient}
}

// failureMessage is the RenewalFailing message: the failure and when the next attempt comes.
func failureMessage(f *failure, attempts int32, retryAt time.Time) string {
	return fmt.Sprintf("%s (attempt %d; next attempt at %s)", f.Message, attempts, stamp(retryAt))
}

func claimsOf(token string) *authv1alpha1.TokenInfo {
	c, err := jwtclaims.Parse(token)
	if err != nil {
		return nil
	}
	return &authv1alpha1.TokenInfo{
		ID: c.ID, Issuer: c.Issuer, Subject: c.Subject, PreferredUsername: c.PreferredUsername,
		AuthorizedParty: c.AuthorizedParty, Audience: c.Audience, Scope: c.Scope, Groups: c.Groups,
	}
}

func setCondition(obj *authv1alpha1.MLflowAccessToken, typ string, status bool, reason, msg string) {
	st := metav1.ConditionFalse
	if status {
		st = metav1.ConditionTrue
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
		Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: obj.Generation,
	})
}

func timePtr(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t.UTC())
	return &mt
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// seriesRef is a reference to obj without resourceVersion. Every event of the operator is
// recorded against it, so that the events library folds repeats of the same event (a renewal on
// schedule, a failure retried with the same message) into one series ("x42 over 2h") instead of
// writing an Event per occurrence: it keys series by the reference, and a resourceVersion would
// make each occurrence new.
func seriesRef(obj *authv1alpha1.MLflowAccessToken) *corev1.ObjectReference {
	return &corev1.ObjectReference{
		APIVersion: authv1alpha1.GroupVersion.String(),
		Kind:       "MLflowAccessToken",
		Namespace:  obj.Namespace,
		Name:       obj.Name,
		UID:        obj.UID,
	}
}

// event records an event about obj (see seriesRef).
func (r *MLflowAccessTokenReconciler) event(obj *authv1alpha1.MLflowAccessToken, eventType, reason, action, format string, args ...any) {
	r.Recorder.Eventf(seriesRef(obj), nil, eventType, reason, action, format, args...)
}

// Wording of messages that several places share.

func msgObjectMissing(kind string, key types.NamespacedName, field string) string {
	return fmt.Sprintf("%s %q (%s) does not exist in namespace %s", kind, key.Name, field, key.Namespace)
}

func msgSecretKeyMissing(name, key, field string, keys []string) string {
	return fmt.Sprintf("Secret %q has no key %q (%s); it has keys %v", name, key, field, keys)
}

func msgSecretKeyEmpty(name, key, field string) string {
	return fmt.Sprintf("key %q of Secret %q (%s) is empty", key, name, field)
}

func msgConfigMapKeyMissing(name, key, field string) string {
	return fmt.Sprintf("ConfigMap %q has no key %q (%s)", name, key, field)
}

func msgConflict(name string) string {
	return fmt.Sprintf("Secret %q exists and is not owned by this MLflowAccessToken; delete it or choose another spec.secretName", name)
}

func msgNeedBootstrap(obj *authv1alpha1.MLflowAccessToken, why string) string {
	return fmt.Sprintf("the refresh chain ended (%s); put a new refresh or offline token into Secret %q key %q (kubectl mlflow-token bootstrap) to start a new one",
		why, obj.Spec.Grant.RefreshTokenSecretRef.Name, refreshKey(obj))
}
