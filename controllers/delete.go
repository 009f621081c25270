package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// reconcileDelete revokes what the resource holds at Keycloak, deletes its Secrets and removes
// the finalizer. gone reports that the finalizer was removed (the object may no longer exist: no
// status write). Failed revocations are retried with backoff until policy.Revocation gives up.
func (r *MLflowAccessTokenReconciler) reconcileDelete(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (res ctrl.Result, gone bool, err error) {
	if !controllerutil.ContainsFinalizer(obj, authv1alpha1.Finalizer) {
		return ctrl.Result{}, true, nil
	}
	owned, err := r.ownedSecrets(ctx, obj)
	if err != nil {
		return ctrl.Result{}, false, err
	}

	if obj.Annotations[authv1alpha1.AnnotationSkipRevocation] == "true" {
		metrics.Revocation("skipped")
		r.event(obj, corev1.EventTypeNormal, "RevocationSkipped", "Revoke", "Revocation skipped because of the %s annotation", authv1alpha1.AnnotationSkipRevocation)
	} else if f := r.revokeWithin(ctx, obj, owned); f != nil {
		if !f.classified() {
			return ctrl.Result{}, false, f
		}
		now := r.now()
		recordFailure(obj, now, authv1alpha1.StageRevocation, f)
		d := policy.Revocation(policy.RevocationInput{Now: now, Requested: obj.DeletionTimestamp.Time, Timeout: r.RevocationTimeout,
			Failure: &policy.Failure{At: now, Count: obj.Status.FailedAttempts}, Seed: string(obj.UID), Backoff: r.Backoff})
		// Without the client's credentials (neither the live ones nor the kit in the state Secret)
		// there is nothing to retry with.
		if !d.GiveUp && !credentialsGone[f.Reason] {
			count := obj.Status.FailedAttempts
			setCondition(obj, authv1alpha1.ConditionReady, false, authv1alpha1.ReasonRevocationFailing, fmt.Sprintf(
				"Deletion waits for revocation: %s (attempt %d; next at %s; giving up at %s)", f.Message, count, stamp(d.RetryAt), stamp(d.Deadline)))
			metrics.Revocation("failed")
			r.event(obj, corev1.EventTypeWarning, authv1alpha1.ReasonRevocationFailedEvent, "Revoke", "Revocation failed: %s", f.Message)
			log.FromContext(ctx).Info("Revocation failed; retrying", "reason", f.Reason, "message", f.Message, "retryAt", d.RetryAt)
			return requeueAt(d.RetryAt, now), false, nil
		}
		metrics.Revocation("abandoned")
		why := fmt.Sprintf("gave up after trying for %s", now.Sub(obj.DeletionTimestamp.Time).Round(1e9))
		if !d.GiveUp {
			why = "nothing to revoke with"
		}
		// Its own reason and action: the events library folds events of the same object, type,
		// reason and action into one series, and the last word must not vanish into the retries'.
		r.event(obj, corev1.EventTypeWarning, authv1alpha1.ReasonRevocationAbandoned, "GiveUp", "Not revoked (%s): %s; the token stays valid until it expires", why, f.Message)
		log.FromContext(ctx).Info("Finishing deletion without revocation", "why", why, "reason", f.Reason, "message", f.Message)
	}

	for _, s := range owned {
		if err := r.releaseSecret(ctx, s); err != nil {
			return ctrl.Result{}, false, err
		}
		if err := r.deleteOwned(ctx, s); err != nil {
			return ctrl.Result{}, false, err
		}
	}
	patch := client.MergeFrom(obj.DeepCopy())
	controllerutil.RemoveFinalizer(obj, authv1alpha1.Finalizer)
	if err := r.Patch(ctx, obj, patch); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, false, err
	}
	// Gone, also when NotFound: a reconcile working from a stale cache found the finalizer that
	// an earlier one had already removed.
	r.unsaved.Delete(client.ObjectKeyFromObject(obj))
	return ctrl.Result{}, true, nil
}

// credentialsGone are failures of revocation that waiting cannot mend: the client's credentials
// are gone and no kit holds a copy.
var credentialsGone = map[string]bool{
	authv1alpha1.ReasonClientSecretNotFound:    true,
	authv1alpha1.ReasonServiceAccountNotFound:  true,
	authv1alpha1.ReasonIssuerNotFound:          true,
	authv1alpha1.ReasonUserCredentialsNotFound: true,
}

// ownedSecrets returns the resource's Secrets as the API server has them: the consumer Secret
// (under its current and its previous name) and the state Secret. Secrets of others are skipped.
func (r *MLflowAccessTokenReconciler) ownedSecrets(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) ([]*corev1.Secret, error) {
	names := []string{obj.SecretNameOrDefault(), tokensecret.StateSecretName(obj)}
	if s := obj.Status.SecretName; s != "" && s != names[0] {
		names = append(names, s)
	}
	var owned []*corev1.Secret
	for _, n := range names {
		s, err := r.ownedSecret(ctx, obj, n, r.APIReader)
		var f *failure
		switch {
		case errors.As(err, &f):
			continue // someone else's Secret: never touch it
		case err != nil:
			return nil, err
		case s != nil:
			owned = append(owned, s)
		}
	}
	return owned, nil
}

// revokeWithin is revokeAll under one deadline over the whole revocation (up to five calls to
// Keycloak: the refresh token, the access tokens, the admin API's token and the session), on top
// of each call's own timeout.
func (r *MLflowAccessTokenReconciler) revokeWithin(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, owned []*corev1.Secret) *failure {
	ctx, cancel := context.WithTimeout(ctx, 2*r.KeycloakTimeout)
	defer cancel()
	return r.revokeAll(ctx, obj, owned)
}

// revokeAll revokes what the resource holds at Keycloak: the refresh chain's token first (that
// ends the session, online or offline), then the unexpired access tokens; with the admin API
// check on, it then makes sure the session is gone, deleting it if not. Only tokens this resource
// issued are revoked (sealed: trust.go): a token a tenant placed in its Secrets, perhaps another
// namespace's, is never sent.
func (r *MLflowAccessTokenReconciler) revokeAll(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, secrets []*corev1.Secret) *failure {
	now := r.now()
	var access []string
	var chain *tokensecret.Chain
	var kit *tokensecret.Kit
	for _, s := range secrets {
		if s.Name == tokensecret.StateSecretName(obj) {
			st := r.readState(obj, s)
			chain, kit = st.chain, st.kit
			if sup := st.superseded; sup != nil && !tokenExpired(sup.Token, now) {
				access = append(access, sup.Token)
			}
			continue
		}
		if st, _ := r.consumerToken(obj, s); st != nil && now.Before(st.ExpiresAt) {
			access = append(access, st.AccessToken)
		}
	}
	if pending, ok := r.unsavedChain(obj); ok {
		chain = &pending // newer than the state Secret's
	}
	sessionID, offline := obj.Status.SessionID, obj.Status.OfflineSession
	if chain != nil {
		sessionID, offline = cmp.Or(chain.SessionID, sessionID), chain.Offline || offline
	}
	verify := (r.VerifySessionRevocation || (obj.Spec.Revocation != nil && obj.Spec.Revocation.VerifySessionWithAdminAPI)) && sessionID != ""
	if len(access) == 0 && (chain == nil || chain.RefreshToken == "") && !verify {
		return nil
	}

	a, f := r.revocationAccess(ctx, obj, kit)
	if f != nil {
		return f
	}
	var what []string
	if chain != nil && chain.RefreshToken != "" {
		if err := r.revoke(ctx, a, chain.RefreshToken, "refresh_token"); err != nil {
			return keycloakFailure(err, "")
		}
		what = append(what, "refresh token (ends the session)")
	}
	for _, t := range access {
		if err := r.revoke(ctx, a, t, "access_token"); err != nil {
			return keycloakFailure(err, "")
		}
	}
	if len(access) > 0 {
		what = append(what, "access token")
	}
	if verify {
		ended, f := r.endSession(ctx, obj, a, sessionID, offline)
		if f != nil {
			return f
		}
		what = append(what, ended)
	}
	metrics.Revocation("revoked")
	r.event(obj, corev1.EventTypeNormal, "Revoked", "Revoke", "Revoked at Keycloak: %s", strings.Join(what, ", "))
	log.FromContext(ctx).Info("Revoked at Keycloak", "what", what, "session", sessionID, "offline", offline)
	return nil
}

// endSession makes sure a session is gone through the admin API, with a token of the client's
// own service account, deleting it if revocation left it alive.
func (r *MLflowAccessTokenReconciler) endSession(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, a access, sessionID string, offline bool) (string, *failure) {
	admin, err := r.token(ctx, a, clientCredentials)
	if err != nil {
		return "", keycloakFailure(err, "admin API token")
	}
	kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
	defer cancel()
	existed, err := r.Keycloak.DeleteSession(kctx, a.Endpoint, admin.AccessToken, sessionID, offline)
	if err != nil {
		return "", keycloakFailure(err, "checking the session with the admin API")
	}
	if existed {
		r.event(obj, corev1.EventTypeWarning, "SessionDeleted", "Revoke", "Session %s was still alive after revocation; deleted it through the admin API", sessionID)
		return "session (through the admin API)", nil
	}
	return "session checked gone with the admin API", nil
}
