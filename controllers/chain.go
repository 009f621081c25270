package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// The refresh chain (RefreshToken and Password grants) lives in the state Secret. Its rules
// (policy.NextChainStep) exist because a realm with strict rotation ends the session when an old
// refresh token is redeemed. How they are kept:
//
//  1. The refresh token is always read from the API server (never the cache), so a stale copy
//     is never redeemed.
//  2. Before redeeming, a "redeeming" marker is written to the state Secret with an optimistic
//     lock. Only one writer wins, so two replicas (or two reconciles) never redeem the same token.
//     A marker left behind tells a restarted operator that a redemption was interrupted; it then
//     asks Keycloak's introspection endpoint, which does not consume the token, whether the token
//     is still active, and redeems it only if it is.
//  3. The new refresh token is persisted before the access token is published.

// obtainByRefresh obtains a token for the RefreshToken and Password grants.
// It returns the state Secret as written last, with the new chain in it.
func (r *MLflowAccessTokenReconciler) obtainByRefresh(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, a access) (*keycloak.Token, *tokensecret.Chain, *corev1.Secret, *failure) {
	logger := log.FromContext(ctx)
	password := obj.Spec.Grant.Type == authv1alpha1.GrantPassword
	stateSecret, chain, replaced, f := r.loadChain(ctx, obj, a.Auth.ClientID)
	if f != nil {
		return nil, nil, nil, f
	}
	for {
		step := policy.NextChainStep(chainInput(r.now(), password, chain, r.KeycloakTimeout))
		switch step {
		case policy.StepWait:
			return nil, nil, nil, &failure{Message: "another redemption of this refresh chain is in flight"}
		case policy.StepCheckInterrupted:
			// The operator stopped mid-redemption. Ask Keycloak, without using the token,
			// whether that redemption reached it.
			kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
			active, err := r.Keycloak.Introspect(kctx, a.Endpoint, a.Auth, chain.RefreshToken, "refresh_token")
			cancel()
			if err != nil {
				return nil, nil, nil, keycloakFailure(err, "checking an interrupted refresh")
			}
			chain.Redeeming = ""
			if !active {
				logger.Info("An interrupted redemption consumed the refresh token; the chain is lost")
				r.event(obj, corev1.EventTypeWarning, authv1alpha1.ReasonRefreshTokenInvalid, "Refresh",
					"The operator stopped while redeeming the refresh token and Keycloak had already rotated it; the chain is lost")
				chain.RefreshToken, chain.Ended = "", "the operator stopped while Keycloak rotated the refresh token"
			} else {
				logger.Info("An interrupted redemption had not consumed the refresh token; redeeming it")
			}
			continue
		case policy.StepLogin:
			return r.login(ctx, obj, a, stateSecret)
		case policy.StepNeedBootstrap:
			chain.Redeeming = ""
			if _, err := r.saveChain(ctx, obj, stateSecret, *chain); err != nil {
				return nil, nil, nil, asFailure(err)
			}
			return nil, nil, nil, &failure{Reason: authv1alpha1.ReasonRefreshTokenInvalid, Message: msgNeedBootstrap(obj, cmp.Or(chain.Ended, "no refresh token"))}
		}
		break // policy.StepRedeem
	}

	// Take the chain: the marker write is a compare-and-swap on the state Secret.
	toRedeem := chain.RefreshToken
	chain.Redeeming = tokensecret.RedeemingMarker(toRedeem, r.now())
	stateSecret, err := r.saveChain(ctx, obj, stateSecret, *chain)
	if err != nil {
		return nil, nil, nil, asFailure(err)
	}
	tok, kerr := r.token(ctx, a, keycloak.Grant{Type: keycloak.GrantRefreshToken, RefreshToken: toRedeem, Scopes: scopes(obj)})
	if kerr != nil {
		chain.Redeeming = ""
		rejected := keycloak.ReasonOf(kerr) == keycloak.ReasonInvalidGrant
		if rejected && policy.AfterRejectedRefresh(password) == policy.StepLogin {
			logger.Info("The refresh chain ended; logging in again", "message", kerr.Error())
			return r.login(ctx, obj, a, stateSecret)
		}
		if rejected {
			chain.Ended, chain.RefreshToken = "refresh token rejected: "+kerr.Error(), ""
		}
		if _, err := r.saveChain(ctx, obj, stateSecret, *chain); err != nil {
			return nil, nil, nil, asFailure(err)
		}
		if rejected {
			return nil, nil, nil, &failure{Reason: authv1alpha1.ReasonRefreshTokenInvalid, Message: msgNeedBootstrap(obj, kerr.Error()), Err: kerr}
		}
		return nil, nil, nil, keycloakFailure(kerr, "")
	}
	next := r.chainFrom(tok, chain)
	saved, err := r.saveChainPersistently(ctx, obj, stateSecret, next)
	if err != nil {
		return nil, nil, nil, asFailure(err)
	}
	if replaced != "" {
		// The chain a new bootstrap token replaced would otherwise stay alive (an offline
		// session lives up to the realm's idle timeout, 30 days by default).
		if err := r.revoke(ctx, a, replaced, "refresh_token"); err != nil {
			logger.Info("Could not end the session of the replaced refresh chain", "error", err.Error())
		} else {
			logger.Info("Ended the session of the refresh chain a new bootstrap token replaced")
		}
	}
	return tok, &next, saved, nil
}

// loadChain reads the chain: a chain Keycloak rotated while the API server was unavailable
// (kept in memory) is newer than the state Secret's and is saved first; a new bootstrap token
// (RefreshToken grant) starts a new chain, and the refresh token of the chain it replaces is
// returned for revocation once the new one is established.
//
// Only a chain sealed for this resource is believed (trust.go): a state Secret a tenant changed
// counts as none, as if it had been deleted, and its refresh token is never sent anywhere.
func (r *MLflowAccessTokenReconciler) loadChain(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, clientID string) (*corev1.Secret, *tokensecret.Chain, string, *failure) {
	stateSecret, err := r.stateSecret(ctx, obj)
	if err != nil {
		return nil, nil, "", asFailure(err)
	}
	state := r.readState(obj, stateSecret)
	if state.distrusted != "" {
		r.event(obj, corev1.EventTypeWarning, authv1alpha1.ReasonSecretModified, "Refresh", "%s", state.distrusted)
	}
	chain := state.chain
	if pending, ok := r.unsavedChain(obj); ok {
		if stateSecret, err = r.saveChain(ctx, obj, stateSecret, pending); err != nil {
			return nil, nil, "", asFailure(err)
		}
		r.unsaved.Delete(client.ObjectKeyFromObject(obj))
		log.FromContext(ctx).Info("Saved the refresh chain kept in memory while the API server was unavailable")
		chain = &pending
	}
	replaced := ""
	if obj.Spec.Grant.Type == authv1alpha1.GrantRefreshToken {
		bootstrap, f := r.bootstrapToken(ctx, obj)
		if f != nil {
			return nil, nil, "", f
		}
		if h := tokensecret.Hash(bootstrap); chain == nil || chain.Bootstrap != h {
			if f := r.checkBootstrap(ctx, obj, clientID, bootstrap); f != nil {
				return nil, nil, "", f
			}
			// Keep the marker of the chain it replaces: a redemption of that chain may still be
			// in flight, and the in-flight rule must hold until it is over.
			marker := ""
			if chain != nil {
				marker = chain.Redeeming
				if chain.Ended == "" && chain.RefreshToken != bootstrap {
					replaced = chain.RefreshToken
				}
			}
			chain = &tokensecret.Chain{RefreshToken: bootstrap, Bootstrap: h, Redeeming: marker}
		}
	}
	if chain == nil {
		chain = &tokensecret.Chain{}
	}
	return stateSecret, chain, replaced, nil
}

func chainInput(now time.Time, password bool, c *tokensecret.Chain, timeout time.Duration) policy.ChainInput {
	in := policy.ChainInput{Now: now, Password: password, HasRefreshToken: c.RefreshToken != "", Ended: c.Ended != "", RequestTimeout: timeout}
	if hash, since, ok := tokensecret.ParseRedeeming(c.Redeeming); ok {
		in.MarkerSince, in.MarkerIsCurrent = since, hash == tokensecret.Hash(c.RefreshToken)
	}
	return in
}

// login performs the password grant and starts a new chain.
func (r *MLflowAccessTokenReconciler) login(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, a access, stateSecret *corev1.Secret) (*keycloak.Token, *tokensecret.Chain, *corev1.Secret, *failure) {
	user, pass, f := r.userCredentials(ctx, obj)
	if f != nil {
		return nil, nil, nil, f
	}
	tok, err := r.token(ctx, a, keycloak.Grant{Type: keycloak.GrantPassword, Username: user, Password: pass, Scopes: scopes(obj)})
	if err != nil {
		if keycloak.ReasonOf(err) == keycloak.ReasonInvalidGrant {
			return nil, nil, nil, &failure{Reason: authv1alpha1.ReasonInvalidUserCredentials, Err: err, Message: fmt.Sprintf(
				"%s; check the user name and password in Secret %q, and that the account is enabled and fully set up",
				err.Error(), obj.Spec.Grant.PasswordSecretRef.Name)}
		}
		return nil, nil, nil, keycloakFailure(err, "")
	}
	next := r.chainFrom(tok, &tokensecret.Chain{})
	saved, err := r.saveChainPersistently(ctx, obj, stateSecret, next)
	if err != nil {
		return nil, nil, nil, asFailure(err)
	}
	return tok, &next, saved, nil
}

// chainFrom records a token response as the chain's new state.
func (r *MLflowAccessTokenReconciler) chainFrom(tok *keycloak.Token, prev *tokensecret.Chain) tokensecret.Chain {
	next := tokensecret.Chain{RefreshToken: tok.RefreshToken, Bootstrap: prev.Bootstrap, SessionID: tok.SessionState}
	if next.RefreshToken == "" {
		// Realms that do not rotate refresh tokens may omit it: keep the one we redeemed.
		next.RefreshToken = prev.RefreshToken
	}
	if c, err := jwtclaims.Parse(next.RefreshToken); err == nil {
		next.Offline = c.Type == "Offline"
		next.SessionID = cmp.Or(next.SessionID, c.SessionID)
	}
	next.ExpiresAt = policy.ChainEnd(r.now(), tok.RefreshExpiresIn, next.Offline, r.OfflineIdleTimeout)
	return next
}

// stateSecret reads the state Secret from the API server (never the cache: a stale refresh
// token must never be redeemed). nil when it does not exist yet.
func (r *MLflowAccessTokenReconciler) stateSecret(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (*corev1.Secret, error) {
	return r.ownedSecret(ctx, obj, tokensecret.StateSecretName(obj), r.APIReader)
}

// saveChain writes the chain with an optimistic lock: it fails with a conflict when someone else
// wrote the state Secret since it was read, and when someone else created it first.
func (r *MLflowAccessTokenReconciler) saveChain(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, s *corev1.Secret, c tokensecret.Chain) (*corev1.Secret, error) {
	saved, err := r.writeOwned(ctx, obj, s, tokensecret.StateSecretName(obj), func(s *corev1.Secret) bool { return tokensecret.ApplyChain(s, c) }, writeOpts{})
	if apierrors.IsAlreadyExists(err) {
		return nil, &failure{Message: "the state Secret was created concurrently", Err: err}
	}
	return saved, err
}

// chainSaveBudget bounds how long a reconcile keeps trying to save a freshly rotated chain
// before it falls back to the in-memory copy: a short API outage must not hold every worker.
const chainSaveBudget = 2 * time.Second

// saveChainPersistently saves a freshly rotated chain. Until it is saved the new refresh token
// exists only in memory, so it retries for up to chainSaveBudget, and if the API server stays
// unavailable it keeps the chain in memory for the next reconcile to save first (a process
// restart in that window loses it: the redemption marker then makes the next operator check with
// Keycloak).
func (r *MLflowAccessTokenReconciler) saveChainPersistently(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, s *corev1.Secret, c tokensecret.Chain) (*corev1.Secret, error) {
	deadline := time.Now().Add(chainSaveBudget)
	delay := 100 * time.Millisecond
	for {
		saved, err := r.saveChain(ctx, obj, s, c)
		if err == nil {
			return saved, nil
		}
		if apierrors.IsConflict(err) {
			// Someone changed the Secret (a label, an annotation): reread and write over it.
			if fresh, gerr := r.stateSecret(ctx, obj); gerr == nil && fresh != nil {
				s = fresh
			}
		}
		if time.Now().Add(delay).After(deadline) {
			r.unsaved.Store(client.ObjectKeyFromObject(obj), unsavedChain{obj.UID, c})
			return nil, err
		}
		select {
		case <-ctx.Done():
			r.unsaved.Store(client.ObjectKeyFromObject(obj), unsavedChain{obj.UID, c})
			return nil, errors.Join(err, ctx.Err())
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// unsavedChain is a refresh chain kept in memory because the API server would not store it, for
// the resource of that UID (a resource re-created under the same name is another).
type unsavedChain struct {
	uid   types.UID
	chain tokensecret.Chain
}

// unsavedChain returns the chain kept in memory for obj, if any.
func (r *MLflowAccessTokenReconciler) unsavedChain(obj *authv1alpha1.MLflowAccessToken) (tokensecret.Chain, bool) {
	v, ok := r.unsaved.Load(client.ObjectKeyFromObject(obj))
	if !ok || v.(unsavedChain).uid != obj.UID {
		return tokensecret.Chain{}, false
	}
	return v.(unsavedChain).chain, true
}
