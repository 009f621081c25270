package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// The refresh chain (RefreshToken and Password grants) is guarded by three rules, because a
// realm with strict rotation (revokeRefreshToken, reuse 0) ends the session when an old
// refresh token is redeemed:
//
//  1. The refresh token is always read from the API server (never the cache), so a stale
//     copy is never redeemed.
//  2. Before redeeming, a "redeeming" marker is written to the state Secret with an optimistic
//     lock. Only one writer wins, so two replicas (or two reconciles) never redeem the same
//     token. A marker left behind tells a restarted operator that a redemption was
//     interrupted; it then asks Keycloak's introspection endpoint, which does not consume the
//     token, whether the token is still active, and redeems it only if it is.
//  3. The new refresh token is persisted before the access token is published.

// obtainByRefresh obtains a token for the RefreshToken and Password grants.
func (r *MLflowAccessTokenReconciler) obtainByRefresh(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, creds keycloak.Credentials, ep keycloak.Endpoint) (*keycloak.Token, *tokensecret.Chain, *failure) {
	logger := log.FromContext(ctx)
	stateSecret, err := r.stateSecret(ctx, obj)
	if err != nil {
		return nil, nil, asFailure(err)
	}
	chain := tokensecret.ReadChain(stateSecret)
	if c, ok := r.unsaved.Load(obj.UID); ok {
		// A chain Keycloak rotated while the API server was unavailable: it is newer than what
		// the state Secret holds. Save it before anything else.
		pending := c.(tokensecret.Chain)
		if stateSecret, err = r.saveChain(ctx, obj, stateSecret, pending); err != nil {
			return nil, nil, asFailure(err)
		}
		r.unsaved.Delete(obj.UID)
		logger.Info("Saved the refresh chain kept in memory while the API server was unavailable")
		chain = &pending
	}

	var bootstrap, bootstrapHash string
	if obj.Spec.Grant.Type == authv1alpha1.GrantRefreshToken {
		var ferr *failure
		if bootstrap, ferr = r.bootstrapToken(ctx, obj); ferr != nil {
			return nil, nil, ferr
		}
		bootstrapHash = tokensecret.Hash(bootstrap)
		if chain == nil || chain.Bootstrap != bootstrapHash {
			// A new bootstrap token: start a new chain from it.
			chain = &tokensecret.Chain{RefreshToken: bootstrap, Bootstrap: bootstrapHash, Redeeming: chainMarker(chain)}
		}
	}
	if chain == nil {
		chain = &tokensecret.Chain{}
	}

	// A marker left by an earlier attempt.
	if chain.Redeeming != "" {
		hash, since, _ := tokensecret.ParseRedeeming(chain.Redeeming)
		if r.now().Sub(since) < r.KeycloakTimeout+5*time.Second {
			return nil, nil, &failure{Message: "another redemption of this refresh chain is in flight"}
		}
		if hash == tokensecret.Hash(chain.RefreshToken) && chain.RefreshToken != "" {
			// The operator stopped mid-redemption. Ask Keycloak, without using the token,
			// whether that redemption reached it: under strict rotation a consumed refresh
			// token is inactive, and redeeming it again would end the session.
			kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
			active, err := r.Keycloak.Introspect(kctx, ep, creds, chain.RefreshToken, "refresh_token")
			cancel()
			if err != nil {
				return nil, nil, &failure{Reason: string(keycloak.ReasonOf(err)), Message: "checking an interrupted refresh: " + err.Error()}
			}
			if active {
				logger.Info("An interrupted redemption had not consumed the refresh token; redeeming it")
			} else {
				logger.Info("An interrupted redemption consumed the refresh token; the chain is lost")
				r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, authv1alpha1.ReasonRefreshTokenInvalid, "Refresh",
					"The operator stopped while redeeming the refresh token and Keycloak had already rotated it; the chain is lost")
				chain.RefreshToken = ""
				chain.Ended = "the operator stopped while Keycloak rotated the refresh token"
			}
		}
		chain.Redeeming = ""
	}

	if chain.Ended != "" || chain.RefreshToken == "" {
		if obj.Spec.Grant.Type == authv1alpha1.GrantRefreshToken {
			f := &failure{Reason: authv1alpha1.ReasonRefreshTokenInvalid, Message: fmt.Sprintf(
				"the refresh chain ended (%s); put a new refresh or offline token into Secret %q key %q to start a new one",
				firstNonEmpty(chain.Ended, "no refresh token"), obj.Spec.Grant.RefreshTokenSecretRef.Name, refreshKey(obj))}
			if _, err := r.saveChain(ctx, obj, stateSecret, *chain); err != nil {
				return nil, nil, asFailure(err)
			}
			return nil, nil, f
		}
		return r.login(ctx, obj, creds, ep, stateSecret)
	}

	// Take the chain: the marker write is a compare-and-swap on the state Secret.
	toRedeem := chain.RefreshToken
	chain.Redeeming = tokensecret.RedeemingMarker(toRedeem, r.now())
	stateSecret, err = r.saveChain(ctx, obj, stateSecret, *chain)
	if err != nil {
		return nil, nil, asFailure(err)
	}

	kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
	tok, kerr := r.Keycloak.Refresh(kctx, ep, creds, toRedeem, r.scopes(obj))
	cancel()
	if kerr != nil {
		chain.Redeeming = ""
		reason := keycloak.ReasonOf(kerr)
		if reason == keycloak.ReasonInvalidGrant {
			if obj.Spec.Grant.Type == authv1alpha1.GrantPassword {
				logger.Info("The refresh chain ended; logging in again", "message", kerr.Error())
				return r.login(ctx, obj, creds, ep, stateSecret)
			}
			chain.Ended = "refresh token rejected: " + kerr.Error()
			chain.RefreshToken = ""
		}
		if _, err := r.saveChain(ctx, obj, stateSecret, *chain); err != nil {
			return nil, nil, asFailure(err)
		}
		if reason == keycloak.ReasonInvalidGrant {
			return nil, nil, &failure{Reason: authv1alpha1.ReasonRefreshTokenInvalid, Message: fmt.Sprintf(
				"%s; put a new refresh or offline token into Secret %q key %q", kerr.Error(),
				obj.Spec.Grant.RefreshTokenSecretRef.Name, refreshKey(obj))}
		}
		return nil, nil, &failure{Reason: string(reason), Message: kerr.Error()}
	}
	next := r.chainFrom(tok, chain)
	if _, err := r.saveChainPersistently(ctx, obj, stateSecret, next); err != nil {
		return nil, nil, asFailure(err)
	}
	return tok, &next, nil
}

// login performs the password grant and starts a new chain.
func (r *MLflowAccessTokenReconciler) login(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, creds keycloak.Credentials, ep keycloak.Endpoint, stateSecret *corev1.Secret) (*keycloak.Token, *tokensecret.Chain, *failure) {
	user, ferr := r.userCredentials(ctx, obj)
	if ferr != nil {
		return nil, nil, ferr
	}
	kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
	tok, err := r.Keycloak.Password(kctx, ep, creds, user, r.scopes(obj))
	cancel()
	if err != nil {
		if keycloak.ReasonOf(err) == keycloak.ReasonInvalidGrant {
			return nil, nil, &failure{Reason: authv1alpha1.ReasonInvalidUserCredentials, Message: fmt.Sprintf(
				"%s; check the user name and password in Secret %q, and that the account is enabled and fully set up",
				err.Error(), obj.Spec.Grant.PasswordSecretRef.Name)}
		}
		return nil, nil, &failure{Reason: string(keycloak.ReasonOf(err)), Message: err.Error()}
	}
	next := r.chainFrom(tok, &tokensecret.Chain{})
	if _, err := r.saveChainPersistently(ctx, obj, stateSecret, next); err != nil {
		return nil, nil, asFailure(err)
	}
	return tok, &next, nil
}

// chainFrom records a token response as the chain's new state.
func (r *MLflowAccessTokenReconciler) chainFrom(tok *keycloak.Token, prev *tokensecret.Chain) tokensecret.Chain {
	now := r.now()
	next := tokensecret.Chain{RefreshToken: tok.RefreshToken, Bootstrap: prev.Bootstrap, SessionID: tok.SessionState}
	if next.RefreshToken == "" {
		// Realms that do not rotate refresh tokens may omit it: keep the one we redeemed.
		next.RefreshToken = prev.RefreshToken
	}
	if c, err := jwtclaims.Parse(next.RefreshToken); err == nil {
		next.Offline = c.Type == "Offline"
		next.SessionID = firstNonEmpty(next.SessionID, c.SessionID)
	}
	switch {
	case tok.RefreshExpiresIn > 0:
		next.ExpiresAt = now.Add(tok.RefreshExpiresIn).Truncate(time.Second)
	case next.Offline && r.OfflineIdleTimeout > 0:
		// refresh_expires_in 0 does not mean forever: the realm's offline idle timeout ends an
		// offline session that is not refreshed in time.
		next.ExpiresAt = now.Add(r.OfflineIdleTimeout).Truncate(time.Second)
	}
	return next
}

// stateSecret reads the state Secret from the API server (never the cache: a stale refresh
// token must never be redeemed). nil when it does not exist yet.
func (r *MLflowAccessTokenReconciler) stateSecret(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (*corev1.Secret, error) {
	return r.ownedSecret(ctx, obj, tokensecret.StateSecretName(obj), r.APIReader)
}

// saveChain writes the chain with an optimistic lock: it fails with a conflict when someone else
// wrote the state Secret since it was read.
func (r *MLflowAccessTokenReconciler) saveChain(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, s *corev1.Secret, c tokensecret.Chain) (*corev1.Secret, error) {
	if s == nil {
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: tokensecret.StateSecretName(obj), Namespace: obj.Namespace}}
		tokensecret.ApplyChain(s, c)
		if err := controllerutil.SetControllerReference(obj, s, r.Scheme()); err != nil {
			return nil, err
		}
		r.written.expect(s)
		if err := r.Create(ctx, s); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return nil, &failure{Message: "the state Secret was created concurrently"}
			}
			return nil, err
		}
		r.written.record(s)
		return s, nil
	}
	s = s.DeepCopy()
	if !tokensecret.ApplyChain(s, c) {
		return s, nil
	}
	r.written.expect(s)
	if err := r.Update(ctx, s); err != nil { // Update carries resourceVersion: optimistic lock
		return nil, err
	}
	r.written.record(s)
	return s, nil
}

// saveChainPersistently saves a freshly rotated chain. Until it is saved the new refresh token
// exists only in memory, so it retries for a while, and if the API server stays unavailable it
// keeps the chain in memory for the next reconcile to save first (a process restart in that
// window loses it: the redemption marker then makes the next operator check with Keycloak).
func (r *MLflowAccessTokenReconciler) saveChainPersistently(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, s *corev1.Secret, c tokensecret.Chain) (*corev1.Secret, error) {
	var err error
	delay := 250 * time.Millisecond
	for range 8 {
		var saved *corev1.Secret
		if saved, err = r.saveChain(ctx, obj, s, c); err == nil {
			return saved, nil
		}
		if apierrors.IsConflict(err) {
			// Someone changed the Secret (a label, an annotation): reread and write over it.
			if fresh, gerr := r.stateSecret(ctx, obj); gerr == nil && fresh != nil {
				s = fresh
			}
		}
		select {
		case <-ctx.Done():
			r.unsaved.Store(obj.UID, c)
			return nil, errors.Join(err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 4*time.Second)
	}
	r.unsaved.Store(obj.UID, c)
	return nil, err
}

func (r *MLflowAccessTokenReconciler) bootstrapToken(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (string, *failure) {
	ref := obj.Spec.Grant.RefreshTokenSecretRef
	if ref == nil {
		return "", &failure{Reason: authv1alpha1.ReasonRefreshTokenNotFound, Message: "grant.refreshTokenSecretRef is not set"}
	}
	v, ferr := r.secretValue(ctx, obj, ref.Name, refreshKey(obj), authv1alpha1.ReasonRefreshTokenNotFound, "grant.refreshTokenSecretRef")
	return string(v), ferr
}

func (r *MLflowAccessTokenReconciler) userCredentials(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (keycloak.UserCredentials, *failure) {
	ref := obj.Spec.Grant.PasswordSecretRef
	if ref == nil {
		return keycloak.UserCredentials{}, &failure{Reason: authv1alpha1.ReasonUserCredentialsNotFound, Message: "grant.passwordSecretRef is not set"}
	}
	uk, pk := firstNonEmpty(ref.UsernameKey, "username"), firstNonEmpty(ref.PasswordKey, "password")
	user, ferr := r.secretValue(ctx, obj, ref.Name, uk, authv1alpha1.ReasonUserCredentialsNotFound, "grant.passwordSecretRef")
	if ferr != nil {
		return keycloak.UserCredentials{}, ferr
	}
	pass, ferr := r.secretValue(ctx, obj, ref.Name, pk, authv1alpha1.ReasonUserCredentialsNotFound, "grant.passwordSecretRef")
	if ferr != nil {
		return keycloak.UserCredentials{}, ferr
	}
	return keycloak.UserCredentials{Username: string(user), Password: string(pass)}, nil
}

// secretValue reads one non-empty key of a user's Secret through the uncached reader.
func (r *MLflowAccessTokenReconciler) secretValue(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, name, key, reason, field string) ([]byte, *failure) {
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &failure{Reason: reason, Message: fmt.Sprintf("Secret %q (%s) does not exist in namespace %s", name, field, obj.Namespace)}
		}
		return nil, asFailure(err)
	}
	v, ok := s.Data[key]
	if !ok {
		return nil, &failure{Reason: reason, Message: fmt.Sprintf("Secret %q has no key %q (%s); it has keys %v", name, key, field, keysOf(s.Data))}
	}
	if len(v) == 0 {
		return nil, &failure{Reason: reason, Message: fmt.Sprintf("key %q of Secret %q (%s) is empty", key, name, field)}
	}
	return v, nil
}

func refreshKey(obj *authv1alpha1.MLflowAccessToken) string {
	if ref := obj.Spec.Grant.RefreshTokenSecretRef; ref != nil && ref.Key != "" {
		return ref.Key
	}
	return "refresh-token"
}

// chainMarker keeps an in-flight marker of an existing chain when a new bootstrap replaces it,
// so that the in-flight check still applies.
func chainMarker(c *tokensecret.Chain) string {
	if c == nil {
		return ""
	}
	return c.Redeeming
}

// scopes are the scopes requested for the grant; Password with offline adds offline_access.
func (r *MLflowAccessTokenReconciler) scopes(obj *authv1alpha1.MLflowAccessToken) []string {
	s := append([]string(nil), obj.Spec.Grant.Scopes...)
	if obj.Spec.Grant.Type == authv1alpha1.GrantPassword && obj.Spec.Grant.Offline && !slices.Contains(s, "offline_access") {
		s = append(s, "offline_access")
	}
	return s
}

// markChain records the session and the refresh chain's end in status, and for the
// RefreshToken grant warns through RefreshChainExpiring before a person must act.
func (r *MLflowAccessTokenReconciler) markChain(obj *authv1alpha1.MLflowAccessToken, chain *tokensecret.Chain, tok *keycloak.Token) {
	s := &obj.Status
	s.SessionID, s.OfflineSession, s.RefreshChainExpiresAt = tok.SessionState, false, nil
	if c, err := jwtclaims.Parse(tok.AccessToken); err == nil && s.SessionID == "" {
		s.SessionID = c.SessionID
	}
	if chain != nil {
		s.SessionID = firstNonEmpty(chain.SessionID, s.SessionID)
		s.OfflineSession = chain.Offline
		if !chain.ExpiresAt.IsZero() {
			s.RefreshChainExpiresAt = timePtr(chain.ExpiresAt)
		}
	}
	if obj.Spec.Grant.Type != authv1alpha1.GrantRefreshToken {
		meta.RemoveStatusCondition(&s.Conditions, authv1alpha1.ConditionRefreshChainExpiring)
		return
	}
	if s.RefreshChainExpiresAt != nil && s.RefreshChainExpiresAt.Sub(r.now()) < r.RefreshChainWarning {
		setCondition(obj, authv1alpha1.ConditionRefreshChainExpiring, true, authv1alpha1.ReasonChainExpiring, fmt.Sprintf(
			"The refresh chain ends at %s unless a new refresh or offline token is put into Secret %q; after that no new access token can be obtained",
			s.RefreshChainExpiresAt.UTC().Format(time.RFC3339), obj.Spec.Grant.RefreshTokenSecretRef.Name))
		return
	}
	setCondition(obj, authv1alpha1.ConditionRefreshChainExpiring, false, authv1alpha1.ReasonChainHealthy, "The refresh chain is renewed with every rotation")
}

// keepClientSession handles clients that issue a refresh token with client credentials
// (client_credentials.use_refresh_token): each grant opens a session. The newest refresh token
// is kept in the state Secret so that deletion can end its session, and the previous session is
// ended at once instead of idling until Keycloak expires it.
func (r *MLflowAccessTokenReconciler) keepClientSession(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, tok *keycloak.Token) {
	if tok.RefreshToken == "" {
		return
	}
	stateSecret, err := r.stateSecret(ctx, obj)
	if err != nil {
		return
	}
	prev := tokensecret.ReadChain(stateSecret)
	next := r.chainFrom(tok, &tokensecret.Chain{})
	if _, err := r.saveChainPersistently(ctx, obj, stateSecret, next); err != nil {
		log.FromContext(ctx).Info("Could not record the client session's refresh token", "error", err.Error())
		return
	}
	if prev != nil && prev.RefreshToken != "" && prev.RefreshToken != next.RefreshToken {
		if ep, creds, ferr := r.keycloakAccess(ctx, obj); ferr == nil {
			kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
			defer cancel()
			if err := r.Keycloak.Revoke(kctx, ep, creds, prev.RefreshToken, "refresh_token"); err != nil {
				log.FromContext(ctx).Info("Could not end the previous client session", "error", err.Error())
			}
		}
	}
}
