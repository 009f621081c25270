package federated

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
)

// TestClientAuthenticationFlow: federated-jwt must be an ALTERNATIVE of the realm's
// client-authentication flow. Realms created on 26.6+ have it; a realm whose built-in "clients"
// flow lacks it (created on an older Keycloak, or imported from such an export) refuses every
// service-account token with 401, and Keycloak does not let anyone add an execution to a
// built-in flow: the fix is a copy of the flow with the authenticator, bound to the realm.
func TestClientAuthenticationFlow(t *testing.T) {
	ctx := context.Background()
	saTok := saToken(t, nsA, saName, 600, realmIssuer)

	t.Run("present but DISABLED", func(t *testing.T) {
		setFederatedRequirement(t, realm, "DISABLED")
		t.Cleanup(func() { setFederatedRequirement(t, realm, "ALTERNATIVE") })
		expectError(t, "federated-jwt DISABLED", grant(t, saTok, nil), http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials")
		changed, err := kc.EnsureFederatedClientAuthenticator(ctx, realm)
		if err != nil || !changed {
			t.Fatalf("EnsureFederatedClientAuthenticator: changed=%v err=%v, want true", changed, err)
		}
		if a := grant(t, saTok, nil); a.Status != http.StatusOK {
			t.Fatalf("after EnsureFederatedClientAuthenticator: %s", a.errorOf())
		}
		if changed, err := kc.EnsureFederatedClientAuthenticator(ctx, realm); err != nil || changed {
			t.Fatalf("EnsureFederatedClientAuthenticator again: changed=%v err=%v, want false", changed, err)
		}
	})

	t.Run("missing from a built-in flow", func(t *testing.T) {
		// A realm whose built-in client flow has the four pre-26.4 authenticators only.
		const old = "pre-federation"
		execs := []map[string]any{}
		for i, a := range []string{"client-secret", "client-jwt", "client-secret-jwt", "client-x509"} {
			execs = append(execs, map[string]any{"authenticator": a, "requirement": "ALTERNATIVE", "priority": 10 * (i + 1), "autheticatorFlow": false, "userSetupAllowed": false})
		}
		status, body, err := kc.Admin(ctx, http.MethodPost, "/admin/realms", map[string]any{
			"realm": old, "enabled": true, "sslRequired": "none", "clientAuthenticationFlow": "clients",
			"authenticationFlows": []map[string]any{{
				"alias": "clients", "providerId": "client-flow", "topLevel": true, "builtIn": true,
				"description": "Base authentication for clients", "authenticationExecutions": execs,
			}},
		})
		if err != nil || status != http.StatusCreated {
			t.Fatalf("creating realm %s: HTTP %d %s %v", old, status, body, err)
		}
		t.Cleanup(func() { _, _, _ = kc.Admin(context.Background(), http.MethodDelete, "/admin/realms/"+old, nil) })
		if err := kc.ConfigureKubernetesIdP(ctx, old, keycloak.KubernetesIdP{IssuerURL: servers.IssuerURL}); err != nil {
			t.Fatal(err)
		}
		if _, err := kc.AddFederatedClient(ctx, old, keycloak.FederatedClient{ClientID: "old-a", Subject: keycloak.ServiceAccountSubject(nsA, saName)}); err != nil {
			t.Fatal(err)
		}
		oldIssuer := kc.URL() + "/realms/" + old
		oldTok := saToken(t, nsA, saName, 600, oldIssuer)
		oldGrant := func() oauthAnswer {
			return post(t, oldIssuer+"/protocol/openid-connect/token", withGrant(federatedAuth(oldTok)))
		}
		expectError(t, "flow without federated-jwt", oldGrant(), http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials")

		// Measured: HTTP 400 {"error":"It is illegal to add execution to a built in flow"}.
		status, body, _ = kc.Admin(ctx, http.MethodPost, "/admin/realms/"+old+"/authentication/flows/clients/executions/execution", map[string]string{"provider": keycloak.FederatedJWTAuthenticator})
		if status != http.StatusBadRequest {
			t.Errorf("adding federated-jwt to the built-in flow: HTTP %d %s, want 400", status, body)
		}

		changed, err := kc.EnsureFederatedClientAuthenticator(ctx, old)
		if err != nil || !changed {
			t.Fatalf("EnsureFederatedClientAuthenticator: changed=%v err=%v, want true", changed, err)
		}
		status, body, _ = kc.Admin(ctx, http.MethodGet, "/admin/realms/"+old, nil)
		var rep struct {
			ClientAuthenticationFlow string `json:"clientAuthenticationFlow"`
		}
		if err := json.Unmarshal(body, &rep); err != nil || rep.ClientAuthenticationFlow != keycloak.FederatedFlowCopy {
			t.Fatalf("realm %s after the fix: HTTP %d clientAuthenticationFlow=%q, want %q", old, status, rep.ClientAuthenticationFlow, keycloak.FederatedFlowCopy)
		}
		if a := oldGrant(); a.Status != http.StatusOK {
			t.Fatalf("after EnsureFederatedClientAuthenticator: %s", a.errorOf())
		}
		if changed, err := kc.EnsureFederatedClientAuthenticator(ctx, old); err != nil || changed {
			t.Fatalf("EnsureFederatedClientAuthenticator again: changed=%v err=%v, want false", changed, err)
		}
	})
}

// setFederatedRequirement sets the requirement of federated-jwt in the realm's built-in
// "clients" flow (allowed, unlike adding or removing an execution).
func setFederatedRequirement(t *testing.T, r, requirement string) {
	t.Helper()
	ctx := context.Background()
	path := "/admin/realms/" + r + "/authentication/flows/clients/executions"
	status, body, err := kc.Admin(ctx, http.MethodGet, path, nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d %s %v", path, status, body, err)
	}
	var execs []map[string]any
	if err := json.Unmarshal(body, &execs); err != nil {
		t.Fatal(err)
	}
	for _, e := range execs {
		if e["providerId"] != keycloak.FederatedJWTAuthenticator {
			continue
		}
		e["requirement"] = requirement
		if status, body, err := kc.Admin(ctx, http.MethodPut, path, e); err != nil || status != http.StatusNoContent {
			t.Fatalf("PUT %s: HTTP %d %s %v", path, status, body, err)
		}
		return
	}
	t.Fatalf("realm %s: no federated-jwt in the clients flow", r)
}
