package controllers

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// Superseded tokens (spec.revocation.revokeSuperseded). A rotation leaves the previous access
// token valid until it expires. With the option on, the rotation records it in the state Secret
// (sealed, never in status) with the time it is due for revocation: after the grace period that
// the consumers need to receive the new token. The reconcile that comes at that time revokes it.
// A failed revocation is retried every supersededRetry until the token expires on its own.

// supersededRetry is the wait after a failed revocation of a superseded token.
const supersededRetry = 10 * time.Second

func revokesSuperseded(obj *authv1alpha1.MLflowAccessToken) bool {
	return obj.Spec.Revocation != nil && obj.Spec.Revocation.RevokeSuperseded
}

// supersede returns what to record after a rotation that replaced prev (nil: nothing to revoke).
func (r *MLflowAccessTokenReconciler) supersede(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, prev *tokensecret.State) *tokensecret.Superseded {
	if !revokesSuperseded(obj) || prev == nil {
		return nil
	}
	grace := r.delivery(ctx, obj).Need()
	if g := obj.Spec.Revocation.SupersededGracePeriod; g != nil {
		grace = g.Duration
	}
	at, ok := policy.SupersededRevokeAt(r.now(), prev.ExpiresAt, grace)
	if !ok {
		return nil
	}
	return &tokensecret.Superseded{Token: prev.AccessToken, RevokeAt: at}
}

// settleSuperseded revokes the superseded token of the state Secret when it is due, and returns
// when to come back for it (zero: nothing pending). The state Secret is read from the cache (it
// is sealed, so the cache holds it whole): no API read per reconcile.
func (r *MLflowAccessTokenReconciler) settleSuperseded(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, t *target) time.Time {
	if !revokesSuperseded(obj) {
		return time.Time{} // a token pending from before the option was turned off goes at the next rotation
	}
	name := tokensecret.StateSecretName(obj)
	state, err := r.ownedSecret(ctx, obj, name, r.Client)
	if err != nil || state == nil {
		return time.Time{}
	}
	sup := r.readState(obj, state).superseded
	if sup == nil {
		return time.Time{}
	}
	now := r.now()
	if now.Before(sup.RevokeAt) {
		return sup.RevokeAt
	}
	if tokenExpired(sup.Token, now) {
		metrics.SupersededRevocation("expired")
		r.clearSuperseded(ctx, obj, state)
		return time.Time{}
	}
	a, f := r.access(ctx, t)
	if f == nil {
		if err := r.revoke(ctx, a, sup.Token, "access_token"); err != nil {
			f = keycloakFailure(err, "revoking the superseded token")
		}
	}
	if f != nil {
		metrics.SupersededRevocation("failed")
		r.event(obj, corev1.EventTypeWarning, authv1alpha1.ReasonSupersededRevocationFailed, "RevokeSuperseded",
			"Could not revoke the token the last rotation replaced (retrying until it expires): %s", f.Message)
		return now.Add(supersededRetry)
	}
	metrics.SupersededRevocation("revoked")
	log.FromContext(ctx).V(1).Info("Revoked the superseded token", "dueAt", sup.RevokeAt)
	r.clearSuperseded(ctx, obj, state)
	return time.Time{}
}

func (r *MLflowAccessTokenReconciler) clearSuperseded(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, state *corev1.Secret) {
	if _, err := r.writeOwned(ctx, obj, state, state.Name, func(s *corev1.Secret) bool { return tokensecret.ApplySuperseded(s, nil) }, writeOpts{}); err != nil {
		log.FromContext(ctx).V(1).Info("Could not clear the superseded token; next reconcile", "error", err.Error())
	}
}

// revokePendingSuperseded revokes at once a superseded token still pending when the next
// rotation comes (its consumers had a whole rotation to move on). Best effort.
func (r *MLflowAccessTokenReconciler) revokePendingSuperseded(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, a access, state *corev1.Secret) {
	sup := r.readState(obj, state).superseded
	if sup == nil {
		return
	}
	if err := r.revoke(ctx, a, sup.Token, "access_token"); err != nil {
		metrics.SupersededRevocation("failed")
		log.FromContext(ctx).Info("Could not revoke the superseded token of the previous rotation", "error", err.Error())
		return
	}
	metrics.SupersededRevocation("revoked")
}

// delivery describes the resource's consumers for the delivery policy.
func (r *MLflowAccessTokenReconciler) delivery(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) policy.Delivery {
	d := policy.Delivery{KubeletSyncFrequency: r.Delivery.KubeletSyncFrequency}
	if n := r.Delivery.Nudger; n != nil {
		d.NudgeQPS = n.QPS()
		if mounted, _, err := n.Consumers(ctx, obj.Namespace, obj.SecretNameOrDefault()); err == nil {
			d.NudgedPods = len(mounted)
		}
	}
	return d
}

// earliest is the earlier of two times, a zero time counting as none.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// tokenExpired reports whether a token's exp claim has passed (false when it has none).
func tokenExpired(token string, now time.Time) bool {
	c, err := jwtclaims.Parse(token)
	return err == nil && !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt)
}
