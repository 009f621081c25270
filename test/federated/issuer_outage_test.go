package federated

// These tests stop and restart the API server (etcd keeps running) and leave it as they found it.
// No test of this package is parallel: several change the realm's identity provider or the
// clients others use (measured: run side by side, four of them fail).

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// TestIssuerUnreachable: Keycloak fetches the issuer's discovery document and JWKS when it first
// needs a key, not when the identity provider is created, and verifies later tokens with the
// cached key without asking the issuer. A failed fetch is not remembered: the first request
// after the issuer is back succeeds.
func TestIssuerUnreachable(t *testing.T) {
	ctx := context.Background()
	const late = "created-while-issuer-down"
	lateIssuer := kc.URL() + "/realms/" + late
	// Tokens are minted before the API server stops; the audience of a realm that does not exist
	// yet is fine for the API server.
	cachedTok := saToken(t, nsA, saName, 600, realmIssuer)
	lateTok := saToken(t, nsA, saName, 600, lateIssuer)
	if a := grant(t, cachedTok, nil); a.Status != http.StatusOK {
		t.Fatalf("before the outage: %s", a.errorOf())
	}

	if err := servers.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	running := false
	t.Cleanup(func() {
		if !running {
			if err := servers.StartAPIServer(); err != nil {
				t.Errorf("restarting the API server: %v", err)
			}
		}
	})
	if err := testenvIssuerDown(); err != nil {
		t.Fatal(err)
	}

	if a := grant(t, cachedTok, nil); a.Status != http.StatusOK {
		t.Errorf("issuer down, key cached: %s, want 200", a.errorOf())
	}

	status, body, err := kc.Admin(ctx, http.MethodPost, "/admin/realms", map[string]any{"realm": late, "enabled": true, "sslRequired": "none"})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("creating realm %s: HTTP %d %s %v", late, status, body, err)
	}
	t.Cleanup(func() { _, _, _ = kc.Admin(context.Background(), http.MethodDelete, "/admin/realms/"+late, nil) })
	if err := kc.ConfigureKubernetesIdP(ctx, late, keycloak.KubernetesIdP{IssuerURL: servers.IssuerURL}); err != nil {
		t.Fatalf("creating the identity provider while the issuer is down: %v (Keycloak was expected not to contact the issuer)", err)
	}
	if _, err := kc.AddFederatedClient(ctx, late, keycloak.FederatedClient{ClientID: "late-a", Subject: keycloak.ServiceAccountSubject(nsA, saName)}); err != nil {
		t.Fatal(err)
	}
	lateGrant := func() oauthAnswer {
		return post(t, lateIssuer+"/protocol/openid-connect/token", withGrant(federatedAuth(lateTok)))
	}
	for i := range 2 {
		expectError(t, fmt.Sprintf("issuer down, no key cached (attempt %d)", i+1), lateGrant(), http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials")
	}

	if err := servers.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	running = true
	// Serving again, anonymously (the authorizer's caches fill after the start).
	caPEM, err := os.ReadFile(servers.IssuerCAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitForIssuerDiscovery(ctx, servers.IssuerURL, caPEM, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if a := lateGrant(); a.Status != http.StatusOK {
		t.Fatalf("issuer back: %s, want 200 at the first attempt", a.errorOf())
	}
}

// TestSigningKeyRotation: tokens signed with a new key (a new `kid`) are accepted without any
// change in Keycloak: a `kid` Keycloak has not cached makes it fetch the JWKS again, but at most
// once every 10 s per identity provider (the keys store's minTimeBetweenRequests). A new key that
// shows up within 10 s of the last fetch is refused (401) until that window has passed. Tokens
// signed with the old key stay valid as long as the JWKS lists it.
func TestSigningKeyRotation(t *testing.T) {
	oldTok := saToken(t, nsA, saName, 600, realmIssuer)
	if a := grant(t, oldTok, nil); a.Status != http.StatusOK {
		t.Fatalf("before the rotation: %s", a.errorOf())
	}

	// First rotation: the new key is picked up by the first request that needs it, or, if
	// Keycloak fetched the JWKS less than 10 s ago, by the first one after that.
	newTok, fetchedAt := rotateAndWaitAccepted(t, kidOf(t, oldTok))
	if a := grant(t, oldTok, nil); a.Status != http.StatusOK {
		t.Errorf("token signed with the old key after the rotation: %s", a.errorOf())
	}

	// Second rotation right away: the fetch that found the first new key was at fetchedAt, so a
	// request with the second key before fetchedAt+10 s is refused, and one after it accepted.
	_, acceptedAt := rotateAndWaitAccepted(t, kidOf(t, newTok))
	window := acceptedAt.Sub(fetchedAt)
	t.Logf("second key accepted %s after the previous JWKS fetch", window.Round(100*time.Millisecond))
	if window < 9*time.Second {
		t.Errorf("second key accepted %s after the previous fetch, want at least ~10 s (Keycloak's minTimeBetweenRequests)", window)
	}
}

// rotateAndWaitAccepted restarts the API server with a new signing key and polls until Keycloak
// accepts a token signed with it; it returns the token and when the accepting request went out.
// The first 401 is reported (expected only inside the 10-s window).
func rotateAndWaitAccepted(t *testing.T, oldKid string) (string, time.Time) {
	t.Helper()
	keys, err := servers.RotateServiceAccountKey()
	if err != nil {
		t.Fatal(err)
	}
	tok := saToken(t, nsA, saName, 600, realmIssuer)
	if kid := kidOf(t, tok); kid == oldKid {
		t.Fatalf("after the rotation to key %d the token still carries kid %s", keys, kid)
	}
	rotated := time.Now()
	refused := 0
	for {
		sent := time.Now()
		a := grant(t, tok, nil)
		if a.Status == http.StatusOK {
			t.Logf("key %d: accepted %s after the API server came back (%d refusals before)", keys, sent.Sub(rotated).Round(100*time.Millisecond), refused)
			return tok, sent
		}
		expectError(t, "new key not yet fetched", a, http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials")
		refused++
		if time.Since(rotated) > 30*time.Second {
			t.Fatalf("key %d: not accepted within 30 s: %s", keys, a.errorOf())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func kidOf(t *testing.T, jwt string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.SplitN(jwt, ".", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil || h.Kid == "" {
		t.Fatalf("JWT header %s: no kid (%v)", b, err)
	}
	return h.Kid
}
