package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

const bootstrapSecret = "alice-bootstrap"

func refreshGrant(o *authv1alpha1.MLflowAccessToken) {
	o.Spec.Grant = authv1alpha1.GrantSpec{Type: authv1alpha1.GrantRefreshToken,
		RefreshTokenSecretRef: &authv1alpha1.RefreshTokenRef{Name: bootstrapSecret, Key: "refresh-token"}}
}

func passwordGrant(o *authv1alpha1.MLflowAccessToken) {
	o.Spec.Grant = authv1alpha1.GrantSpec{Type: authv1alpha1.GrantPassword, Offline: true,
		PasswordSecretRef: &authv1alpha1.UserCredentialsRef{Name: "alice-login", UsernameKey: "username", PasswordKey: "password"}}
}

// refreshEnv is a RefreshToken resource whose bootstrap Secret holds a fresh offline token.
func refreshEnv(t *testing.T) (*env, string) {
	e := newEnv(t, refreshGrant)
	bootstrap := e.kc.Bootstrap(testClient, "alice", true)
	if err := e.c.Create(e.ctx, userSecret(bootstrapSecret, map[string]string{"refresh-token": bootstrap})); err != nil {
		t.Fatal(err)
	}
	return e, bootstrap
}

func (e *env) chain() *tokensecret.Chain {
	e.t.Helper()
	return tokensecret.ReadChain(e.secret(testName + "-refresh-state"))
}

// setMarker leaves a redemption marker in the state Secret, as a process that stopped between
// the marker write and the end of the redemption would.
func (e *env) setMarker(since time.Time) {
	e.t.Helper()
	s := e.secret(testName + "-refresh-state")
	c := tokensecret.ReadChain(s)
	c.Redeeming = tokensecret.RedeemingMarker(c.RefreshToken, since)
	tokensecret.ApplyChain(s, *c)
	tokensecret.Seal(s, testKeys) // as the operator's own marker write would
	if err := e.c.Update(e.ctx, s); err != nil {
		e.t.Fatal(err)
	}
}

var chainScenarios = []scenario{
	{"refresh chain: redeemed once per rotation, the chain kept in the state Secret only", func(t *testing.T) {
		e, bootstrap := refreshEnv(t)
		e.reconcile()
		for range 4 {
			e.next()
		}
		e.wantCalls("refresh_token", 5)
		c := e.chain()
		if c == nil || c.RefreshToken == bootstrap || !e.kc.RefreshActive(c.RefreshToken) || !c.Offline || c.Redeeming != "" {
			t.Fatalf("chain %+v", c)
		}
		for k := range e.secret(testName).Data {
			if k != tokensecret.KeyToken && k != tokensecret.KeyTrackingToken && k != tokensecret.KeyExpiresAt {
				t.Fatalf("the consumer Secret holds %q", k)
			}
		}
		o := e.obj()
		if !o.Status.OfflineSession || o.Status.SessionID == "" || o.Status.RefreshChainExpiresAt == nil {
			t.Fatalf("status %+v", o.Status)
		}
		e.wantCond(authv1alpha1.ConditionRefreshChainExpiring, "False/ChainHealthy")
	}},
	{"refresh chain: a new bootstrap token starts a new chain and ends the old one's session", func(t *testing.T) {
		e, _ := refreshEnv(t)
		e.reconcile()
		oldSession, oldRefresh := e.obj().Status.SessionID, e.chain().RefreshToken
		second := e.kc.Bootstrap(testClient, "alice", true)
		s := e.secret(bootstrapSecret)
		s.Data["refresh-token"] = []byte(second)
		if err := e.c.Update(e.ctx, s); err != nil {
			t.Fatal(err)
		}
		e.next()
		if e.chain().Bootstrap != tokensecret.Hash(second) || e.kc.RefreshActive(second) {
			t.Fatal("the new bootstrap token was not redeemed into a new chain")
		}
		if e.kc.SessionAlive(oldSession) || e.kc.RefreshActive(oldRefresh) {
			t.Fatal("the replaced chain's session is still alive")
		}
	}},
	{"refresh chain: rejected by Keycloak, a person must bootstrap", func(t *testing.T) {
		e, _ := refreshEnv(t)
		e.reconcile()
		if err := e.kc.Revoke(e.ctx, keycloak.Endpoint{}, keycloak.ClientAuth{ClientID: testClient, Secret: testSecret}, e.chain().RefreshToken, "refresh_token"); err != nil {
			t.Fatal(err)
		}
		e.next()
		e.wantCond(authv1alpha1.ConditionRenewalFailing, "True/RefreshTokenInvalid")
		e.wantCond(authv1alpha1.ConditionStalled, "True/RefreshTokenInvalid")
		if c := e.chain(); c.Ended == "" || c.RefreshToken != "" {
			t.Fatalf("chain %+v, want ended", c)
		}
		calls := e.kc.Calls("refresh_token")
		e.next()
		e.wantCalls("refresh_token", calls) // an ended chain is never redeemed again
	}},
	{"refresh chain: an interrupted redemption that never reached Keycloak is redeemed once", func(t *testing.T) {
		e, _ := refreshEnv(t)
		e.reconcile()
		e.setMarker(e.clk.Now())
		e.clk.Step(e.last.RequeueAfter)
		e.reconcile()
		e.wantCalls("introspect", 1)
		e.wantCalls("refresh_token", 2)
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"refresh chain: an interrupted redemption Keycloak had answered loses the chain, never redeems twice", func(t *testing.T) {
		e, _ := refreshEnv(t)
		e.reconcile()
		// The redemption reached Keycloak (the token is consumed) but its answer died with the process.
		spent := e.chain().RefreshToken
		if _, err := e.kc.Token(e.ctx, keycloak.Endpoint{}, keycloak.ClientAuth{ClientID: testClient, Secret: testSecret},
			keycloak.Grant{Type: keycloak.GrantRefreshToken, RefreshToken: spent}); err != nil {
			t.Fatal(err)
		}
		e.setMarker(e.clk.Now())
		before := e.kc.Calls("refresh_token")
		e.clk.Step(e.last.RequeueAfter)
		e.reconcile()
		e.wantCalls("refresh_token", before)
		e.wantCond(authv1alpha1.ConditionRenewalFailing, "True/RefreshTokenInvalid")
		e.wantEvent("Warning", "Keycloak had already rotated it")
	}},
	{"refresh chain: a redemption in flight is not joined", func(t *testing.T) {
		e, _ := refreshEnv(t)
		e.reconcile()
		e.clk.Step(e.last.RequeueAfter)
		e.setMarker(e.clk.Now().Add(-2 * time.Second))
		e.reconcileErr()
		e.wantCalls("refresh_token", 1)
		e.clk.Step(time.Minute)
		e.reconcile()
		e.wantCalls("introspect", 1)
		e.wantCalls("refresh_token", 2)
	}},
	{"password grant: logs in once, lives on refresh, logs in again when the chain ends", func(t *testing.T) {
		e := newEnv(t, passwordGrant, userSecret("alice-login", map[string]string{"username": "alice", "password": "pw"}))
		e.kc.AddUser("alice", "pw")
		e.reconcile()
		e.next()
		e.next()
		e.wantCalls("password", 1)
		e.wantCalls("refresh_token", 2)
		if !e.obj().Status.OfflineSession {
			t.Fatal("offline: true did not give an offline session")
		}
		// The session ends (an admin logged the user out): the next refresh is rejected.
		sid := e.obj().Status.SessionID
		if _, err := e.kc.DeleteSession(e.ctx, keycloak.Endpoint{}, "", sid, true); err != nil {
			t.Fatal(err)
		}
		e.next()
		e.wantCalls("password", 2)
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		e.wantCond(authv1alpha1.ConditionRefreshChainExpiring, "") // only the RefreshToken grant warns
	}},
	{"password grant: a wrong password is the user's to fix", func(t *testing.T) {
		e := newEnv(t, passwordGrant, userSecret("alice-login", map[string]string{"username": "alice", "password": "wrong"}))
		e.kc.AddUser("alice", "pw")
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionReady, "False/InvalidUserCredentials")
		e.wantCond(authv1alpha1.ConditionStalled, "True/InvalidUserCredentials")
		e.wantEvent(corev1.EventTypeWarning, "check the user name and password")
	}},
	{"client credentials with refresh tokens: the previous session ends at each rotation", func(t *testing.T) {
		e := newEnv(t, nil)
		e.kc.ClientRefreshTokens = true
		e.reconcile()
		first := e.obj().Status.SessionID
		e.next()
		if first == "" || e.kc.SessionAlive(first) || !e.kc.SessionAlive(e.obj().Status.SessionID) {
			t.Fatalf("sessions: first %q alive=%v, current %q", first, e.kc.SessionAlive(first), e.obj().Status.SessionID)
		}
	}},
}
