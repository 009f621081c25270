package controllers

import (
	"cmp"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// obtained is a token fresh from Keycloak, with its lifetime by our clock and, for the refresh
// grants, the refresh chain it continues (already persisted in the state Secret).
type obtained struct {
	*keycloak.Token
	IssuedAt, ExpiresAt time.Time
	Chain               *tokensecret.Chain
	access              access
	// state is the state Secret as this reconcile last wrote it (nil: not written).
	state *corev1.Secret
}

// obtain asks Keycloak for a token with the resource's grant. A pending revoke request first
// revokes the token in the Secret (cur).
func (r *MLflowAccessTokenReconciler) obtain(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, t *target, cur *tokensecret.State) (*obtained, *failure) {
	a, f := r.access(ctx, t)
	if f != nil {
		return nil, f
	}
	if pendingRequest(obj, authv1alpha1.AnnotationRevokeRequest, obj.Status.LastRevocationRequest) {
		if f := r.revokeOnRequest(ctx, obj, a, cur); f != nil {
			return nil, f
		}
	}
	// The lifetime is counted from before the request: the token cannot expire later than
	// sent-time + expires_in by our clock.
	issuedAt := r.now()
	var (
		tok   *keycloak.Token
		chain *tokensecret.Chain
		state *corev1.Secret
	)
	switch obj.Spec.Grant.Type {
	case authv1alpha1.GrantClientCredentials:
		var err error
		if tok, err = r.token(ctx, a, keycloak.Grant{Type: keycloak.GrantClientCredentials, Scopes: scopes(obj)}); err != nil {
			return nil, authFailure(err, t)
		}
	case authv1alpha1.GrantRefreshToken, authv1alpha1.GrantPassword:
		if tok, chain, state, f = r.obtainByRefresh(ctx, obj, a); f != nil {
			return nil, f
		}
	default:
		return nil, &failure{Reason: authv1alpha1.ReasonUnsupportedGrant, Message: fmt.Sprintf("grant type %q is not supported by this operator version", obj.Spec.Grant.Type)}
	}
	return &obtained{Token: tok, IssuedAt: issuedAt.Truncate(time.Second), ExpiresAt: expiryOf(tok, issuedAt), Chain: chain, access: a, state: state}, nil
}

// authFailure classifies a failed grant; a client that authenticates with a service-account token
// gets an explanation of what Keycloak checks, since "invalid client credentials" says nothing
// about the binding of a client to a service account.
func authFailure(err error, t *target) *failure {
	f := keycloakFailure(err, "")
	if t.serviceAccount != nil && f.Reason == authv1alpha1.ReasonInvalidClientCredentials {
		f.Message = fmt.Sprintf("%s; the client %q authenticates with tokens of system:serviceaccount:%s:%s: in Keycloak its authenticator must be \"Signed JWT - Federated\" bound to exactly that subject, and Keycloak must reach the cluster's service-account issuer (its keys)",
			f.Message, t.ClientID, t.serviceAccount.Namespace, t.serviceAccount.Name)
	}
	return f
}

// expiryOf is when tok expires: issuedAt + expires_in, or Keycloak's own exp claim when that is
// earlier (clock skew; expires_in can also read one second short of exp - iat).
func expiryOf(tok *keycloak.Token, issuedAt time.Time) time.Time {
	exp := issuedAt.Add(tok.ExpiresIn)
	if c, err := jwtclaims.Parse(tok.AccessToken); err == nil && !c.ExpiresAt.IsZero() && c.ExpiresAt.Before(exp) && c.ExpiresAt.After(issuedAt) {
		exp = c.ExpiresAt
	}
	return exp.Truncate(time.Second)
}

// token calls Keycloak's token endpoint within the exchange timeout.
func (r *MLflowAccessTokenReconciler) token(ctx context.Context, a access, g keycloak.Grant) (*keycloak.Token, error) {
	kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
	defer cancel()
	return r.Keycloak.Token(kctx, a.Endpoint, a.Auth, g)
}

// revoke revokes one token at Keycloak within the exchange timeout.
func (r *MLflowAccessTokenReconciler) revoke(ctx context.Context, a access, token, hint string) error {
	kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
	defer cancel()
	return r.Keycloak.Revoke(kctx, a.Endpoint, a.Auth, token, hint)
}

// revokeOnRequest revokes the token in the Secret before it is replaced (a leaked token:
// kubectl mlflow-token revoke). The request stays pending until the replacement is written, so a
// failure in between revokes again (harmless: Keycloak answers 200 for a revoked token).
func (r *MLflowAccessTokenReconciler) revokeOnRequest(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, a access, cur *tokensecret.State) *failure {
	if cur == nil {
		return nil
	}
	if err := r.revoke(ctx, a, cur.AccessToken, "access_token"); err != nil {
		return keycloakFailure(err, "revoking the current token")
	}
	r.event(obj, corev1.EventTypeNormal, "Revoked", "Revoke", "Revoked the token in Secret %s on request; issuing a new one", obj.SecretNameOrDefault())
	return nil
}

// afterIssue records the session and refresh chain of a new token in status, keeps the
// client-credentials session of clients that issue refresh tokens, and keeps what revocation
// needs in the state Secret.
func (r *MLflowAccessTokenReconciler) afterIssue(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, t *target, got *obtained, sup *tokensecret.Superseded) {
	if obj.Spec.Grant.Type == authv1alpha1.GrantClientCredentials {
		r.keepClientSession(ctx, obj, got)
	}
	r.keepKit(ctx, obj, t, got.access, got.state, sup)
	s := &obj.Status
	s.SessionID, s.OfflineSession, s.RefreshChainExpiresAt = got.SessionState, false, nil
	if c, err := jwtclaims.Parse(got.AccessToken); err == nil && s.SessionID == "" {
		s.SessionID = c.SessionID
	}
	if got.Chain != nil {
		s.SessionID = cmp.Or(got.Chain.SessionID, s.SessionID)
		s.OfflineSession = got.Chain.Offline
		if !got.Chain.ExpiresAt.IsZero() {
			s.RefreshChainExpiresAt = timePtr(got.Chain.ExpiresAt)
		}
	}
	if obj.Spec.Grant.Type != authv1alpha1.GrantRefreshToken {
		meta.RemoveStatusCondition(&s.Conditions, authv1alpha1.ConditionRefreshChainExpiring)
		return
	}
	if s.RefreshChainExpiresAt != nil && policy.ChainExpiring(r.now(), s.RefreshChainExpiresAt.Time, r.RefreshChainWarning) {
		setCondition(obj, authv1alpha1.ConditionRefreshChainExpiring, true, authv1alpha1.ReasonChainExpiring, fmt.Sprintf(
			"The refresh chain ends at %s unless a new refresh or offline token is put into Secret %q; after that no new access token can be obtained",
			stamp(s.RefreshChainExpiresAt.Time), obj.Spec.Grant.RefreshTokenSecretRef.Name))
		return
	}
	setCondition(obj, authv1alpha1.ConditionRefreshChainExpiring, false, authv1alpha1.ReasonChainHealthy, "The refresh chain is renewed with every rotation")
}

// keepClientSession handles clients that issue a refresh token with client credentials
// (client_credentials.use_refresh_token): each grant opens a session. The newest refresh token
// is kept in the state Secret so that deletion can end its session, and the previous session is
// ended at once instead of idling until Keycloak expires it.
func (r *MLflowAccessTokenReconciler) keepClientSession(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, got *obtained) {
	if got.RefreshToken == "" {
		return
	}
	logger := log.FromContext(ctx)
	stateSecret, err := r.stateSecret(ctx, obj)
	if err != nil {
		return
	}
	prev := r.readState(obj, stateSecret).chain
	next := r.chainFrom(got.Token, &tokensecret.Chain{})
	saved, err := r.saveChainPersistently(ctx, obj, stateSecret, next)
	if err != nil {
		logger.Info("Could not record the client session's refresh token", "error", err.Error())
		return
	}
	got.state = saved
	if prev != nil && prev.RefreshToken != "" && prev.RefreshToken != next.RefreshToken {
		if err := r.revoke(ctx, got.access, prev.RefreshToken, "refresh_token"); err != nil {
			logger.Info("Could not end the previous client session", "error", err.Error())
		}
	}
}
