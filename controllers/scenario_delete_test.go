package controllers

import (
	"testing"
	"time"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak/keycloaktest"
)

// deleteNow asks the API server to delete the resource (it stays while the finalizer is on).
func (e *env) deleteNow() {
	e.t.Helper()
	if err := e.c.Delete(e.ctx, e.obj()); err != nil {
		e.t.Fatal(err)
	}
}

// gone reports whether the resource no longer exists.
func (e *env) gone() bool {
	e.t.Helper()
	err := e.c.Get(e.ctx, key, &authv1alpha1.MLflowAccessToken{})
	return err != nil
}

var deleteScenarios = []scenario{
	{"deletion with Keycloak up: session ended, token revoked, Secrets gone", func(t *testing.T) {
		e, _ := refreshEnv(t)
		e.reconcile()
		access, refresh, sid := e.token(), e.chain().RefreshToken, e.obj().Status.SessionID
		e.deleteNow()
		e.reconcile()
		if !e.gone() || e.secret(testName) != nil || e.secret(testName+"-refresh-state") != nil {
			t.Fatal("the resource or its Secrets remain")
		}
		if !e.kc.Revoked(access) || e.kc.RefreshActive(refresh) || e.kc.SessionAlive(sid) {
			t.Fatal("not revoked at Keycloak")
		}
		e.wantEvent("Revoked", "refresh token (ends the session), access token")
	}},
	{"deletion with Keycloak down: retried with backoff, given up at the deadline", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		e.kc.Fail = keycloaktest.Unreachable
		e.deleteNow()
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionReady, "False/RevocationFailing")
		attempts := 1
		for !e.gone() {
			e.next()
			attempts++
			if attempts > 60 {
				t.Fatal("deletion never finished")
			}
		}
		if elapsed := e.clk.Since(e.start); elapsed < 2*time.Minute || elapsed > 2*time.Minute+5*time.Second {
			t.Fatalf("gave up after %s, want the 2 min revocation timeout", elapsed)
		}
		if attempts < 6 || attempts > 30 {
			t.Fatalf("%d attempts in 2 minutes, want a backoff (not a hot loop, not a single try)", attempts)
		}
		e.wantEvent("Warning", "RevocationAbandoned", "gave up after")
	}},
	{"deletion with Keycloak back before the deadline", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		access := e.token()
		e.kc.Fail = keycloaktest.Unreachable
		e.deleteNow()
		e.reconcile()
		e.next()
		e.kc.Fail = nil
		e.next()
		if !e.gone() || !e.kc.Revoked(access) {
			t.Fatal("not revoked once Keycloak was back")
		}
	}},
	{"the client secret went first (a namespace deletion): revoked with the kit of the state Secret", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		access := e.token()
		if err := e.c.Delete(e.ctx, userSecret(clientSecret, nil)); err != nil {
			t.Fatal(err)
		}
		e.deleteNow()
		e.reconcile()
		if !e.gone() || !e.kc.Revoked(access) {
			t.Fatal("not revoked with the kept credentials")
		}
	}},
	{"no credentials anywhere: the deletion finishes at once and says why", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		// A resource from before the state Secret kept a kit: only the live client secret counts.
		state := e.secret(testName + "-refresh-state")
		state.Finalizers = nil
		if err := e.c.Update(e.ctx, state); err != nil {
			t.Fatal(err)
		}
		if err := e.c.Delete(e.ctx, e.secret(testName+"-refresh-state")); err != nil {
			t.Fatal(err)
		}
		if err := e.c.Delete(e.ctx, userSecret(clientSecret, nil)); err != nil {
			t.Fatal(err)
		}
		e.deleteNow()
		e.reconcile()
		if !e.gone() {
			t.Fatal("deletion waits for a client secret that is gone")
		}
		e.wantEvent("Warning", "Not revoked (nothing to revoke with)")
	}},
	{"skip-revocation annotation", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		access := e.token()
		e.update(false, func(o *authv1alpha1.MLflowAccessToken) {
			o.Annotations = map[string]string{authv1alpha1.AnnotationSkipRevocation: "true"}
		})
		e.deleteNow()
		e.reconcile()
		if !e.gone() || e.kc.Revoked(access) {
			t.Fatal("skip-revocation not honoured")
		}
	}},
}
