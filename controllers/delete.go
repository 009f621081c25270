package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// reconcileDelete revokes the last access token, deletes the Secret and removes the finalizer.
// gone reports that the finalizer was removed (the object may no longer exist: no status write).
// Revocation is retried with backoff for RevocationTimeout after deletion was requested; after
// that the deletion finishes anyway with a Warning event, because a resource stuck in
// Terminating forever is worse than a token that expires on its own within minutes.
func (r *MLflowAccessTokenReconciler) reconcileDelete(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (ctrl.Result, bool, error) {
	if !controllerutil.ContainsFinalizer(obj, Finalizer) {
		return ctrl.Result{}, true, nil
	}
	logger := log.FromContext(ctx)

	names := []string{obj.SecretNameOrDefault(), tokensecret.StateSecretName(obj)}
	if s := obj.Status.SecretName; s != "" && s != names[0] {
		names = append(names, s)
	}
	var owned []*corev1.Secret
	for _, n := range names {
		s, err := r.ownedSecret(ctx, obj, n, r.APIReader)
		if err != nil {
			if _, isConflict := err.(*failure); !isConflict {
				return ctrl.Result{}, false, err
			}
			continue // someone else's Secret: never touch it
		}
		if s != nil {
			owned = append(owned, s)
		}
	}

	if obj.Annotations[authv1alpha1.AnnotationSkipRevocation] == "true" {
		metrics.Revocation("skipped")
		r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, "RevocationSkipped", "Revoke",
			"Revocation skipped because of the %s annotation", authv1alpha1.AnnotationSkipRevocation)
	} else if err := r.revokeAll(ctx, obj, owned); err != nil {
		deadline := obj.DeletionTimestamp.Add(r.RevocationTimeout)
		now := r.now()
		// Without the client secret there is nothing to retry with: most often the whole
		// namespace is being deleted and the Secret went first.
		if now.Before(deadline) && err.Reason != authv1alpha1.ReasonClientSecretNotFound {
			obj.Status.FailedAttempts++
			obj.Status.LastFailureTime = timePtr(now.Truncate(time.Second))
			delay := r.Backoff.Delay(obj.Status.FailedAttempts, now, &deadline, r.rand())
			setCondition(obj, authv1alpha1.ConditionReady, false, authv1alpha1.ReasonRevocationFailing,
				fmt.Sprintf("Deletion waits for revocation: %s (attempt %d; giving up at %s)", err.Message,
					obj.Status.FailedAttempts, deadline.UTC().Format(time.RFC3339)))
			metrics.Revocation("failed")
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "RevocationFailed", "Revoke", "Revocation failed: %s", err.Message)
			logger.Info("Revocation failed; retrying", "reason", err.Reason, "message", err.Message, "retryIn", delay.String())
			return ctrl.Result{RequeueAfter: delay}, false, nil
		}
		metrics.Revocation("abandoned")
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "RevocationFailed", "Revoke",
			"Gave up revoking after %s: %s; the token stays valid until it expires", r.RevocationTimeout, err.Message)
		logger.Info("Gave up revoking; finishing deletion", "reason", err.Reason, "message", err.Message)
	}

	for _, s := range owned {
		if err := r.Delete(ctx, s, client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, false, err
		}
		r.written.forget(s)
	}

	patch := client.MergeFrom(obj.DeepCopy())
	controllerutil.RemoveFinalizer(obj, Finalizer)
	if err := r.Patch(ctx, obj, patch); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, false, err
	}
	// Gone, also when NotFound: a reconcile working from a stale cache found the finalizer that
	// an earlier one had already removed.
	r.unsaved.Delete(obj.UID)
	return ctrl.Result{}, true, nil
}

// revokeAll revokes what the resource holds at Keycloak: the refresh chain's token first (that
// ends the session, online or offline), then the unexpired access tokens; with the admin API
// check on, it then makes sure the session is gone, deleting it if not.
func (r *MLflowAccessTokenReconciler) revokeAll(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, secrets []*corev1.Secret) *failure {
	now := r.now()
	var access []string
	for _, s := range secrets {
		st, _ := tokensecret.Read(s)
		if st.AccessToken == "" || (!st.ExpiresAt.IsZero() && !now.Before(st.ExpiresAt)) {
			continue // nothing to revoke, or already expired
		}
		access = append(access, st.AccessToken)
	}
	stateSecret, err := r.stateSecret(ctx, obj)
	if err != nil {
		if f, ok := err.(*failure); ok {
			return f
		}
		return &failure{Reason: authv1alpha1.ReasonRevocationFailing, Message: err.Error()}
	}
	chain := tokensecret.ReadChain(stateSecret)
	if c, ok := r.unsaved.Load(obj.UID); ok {
		pending := c.(tokensecret.Chain) // newer than the state Secret's
		chain = &pending
	}
	sessionID, offline := obj.Status.SessionID, obj.Status.OfflineSession
	if chain != nil {
		sessionID, offline = firstNonEmpty(chain.SessionID, sessionID), chain.Offline || offline
	}
	verify := (r.VerifySessionRevocation || (obj.Spec.Revocation != nil && obj.Spec.Revocation.VerifySessionWithAdminAPI)) && sessionID != ""
	if len(access) == 0 && (chain == nil || chain.RefreshToken == "") && !verify {
		return nil
	}

	ep, creds, ferr := r.keycloakAccess(ctx, obj)
	if ferr != nil {
		return ferr
	}
	revoke := func(token, hint string) *failure {
		kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
		defer cancel()
		if err := r.Keycloak.Revoke(kctx, ep, creds, token, hint); err != nil {
			return &failure{Reason: string(keycloak.ReasonOf(err)), Message: err.Error()}
		}
		return nil
	}
	var what []string
	if chain != nil && chain.RefreshToken != "" {
		if f := revoke(chain.RefreshToken, "refresh_token"); f != nil {
			return f
		}
		what = append(what, "refresh token (ends the session)")
	}
	for _, t := range access {
		if f := revoke(t, "access_token"); f != nil {
			return f
		}
	}
	if len(access) > 0 {
		what = append(what, "access token")
	}
	if verify {
		kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
		defer cancel()
		admin, err := r.Keycloak.ClientCredentials(kctx, ep, creds, nil)
		if err != nil {
			return &failure{Reason: string(keycloak.ReasonOf(err)), Message: "admin API token: " + err.Error()}
		}
		existed, err := r.Keycloak.DeleteSession(kctx, ep, admin.AccessToken, sessionID, offline)
		if err != nil {
			return &failure{Reason: string(keycloak.ReasonOf(err)), Message: "checking the session with the admin API: " + err.Error()}
		}
		if existed {
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "SessionDeleted", "Revoke",
				"Session %s was still alive after revocation; deleted it through the admin API", sessionID)
			what = append(what, "session (through the admin API)")
		} else {
			what = append(what, "session checked gone with the admin API")
		}
	}
	metrics.Revocation("revoked")
	r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, "Revoked", "Revoke", "Revoked at Keycloak: %s", strings.Join(what, ", "))
	log.FromContext(ctx).Info("Revoked at Keycloak", "what", what, "session", sessionID, "offline", offline)
	return nil
}
