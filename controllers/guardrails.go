package controllers

import (
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/scope"
)

// Guardrails are the platform's limits on where the operator sends credentials (internal/scope,
// which the CSI node plugin applies too).
type Guardrails = scope.Guardrails

// checkURL refuses a Keycloak URL the platform does not allow, saying how to allow it.
func checkURL(g Guardrails, raw string, allowHTTP bool, issuer string) *failure {
	return refused(g.Check(raw, allowHTTP, issuer))
}

// refused turns a rule's refusal into a failure (nil stays nil).
func refused(r *scope.Refusal) *failure {
	if r == nil {
		return nil
	}
	return &failure{Reason: r.Reason, Message: r.Message}
}

// noteCredentialChange records that a watched Secret or ConfigMap an issuer references changed.
// Records older than twice the longest backoff are dropped (every so often): a failure that is
// still retried was recorded after them, so they can no longer make it history.
func (r *MLflowAccessTokenReconciler) noteCredentialChange(key types.NamespacedName) {
	now := r.now()
	r.credentialChanges.Store(key, now)
	if r.credentialNotes.Add(1)%64 != 0 {
		return
	}
	horizon := now.Add(-2 * max(r.Backoff.Max, 5*time.Minute))
	r.credentialChanges.Range(func(k, v any) bool {
		if v.(time.Time).Before(horizon) {
			r.credentialChanges.Delete(k)
		}
		return true
	})
}

// credentialsChangedAfter reports whether a credential or CA bundle of t changed after at (as
// far as this process has seen).
func (r *MLflowAccessTokenReconciler) credentialsChangedAfter(t *target, at time.Time) bool {
	var keys []types.NamespacedName
	if t.secret != nil {
		keys = append(keys, t.secret.NamespacedName)
	}
	for _, ref := range []*secretRef{t.ca.configMap, t.ca.secret} {
		if ref != nil {
			keys = append(keys, ref.NamespacedName)
		}
	}
	for _, k := range keys {
		if v, ok := r.credentialChanges.Load(k); ok && v.(time.Time).After(at) {
			return true
		}
	}
	return false
}
