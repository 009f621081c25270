package federated

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
)

// TestServiceAccountTokenAuthenticatesClient: a TokenRequest token of team-a/sa1 whose audience
// is the realm's issuer URL is the client authentication of client federated-a, with no secret,
// and it can be used again and again until it expires (the operator may cache it).
func TestServiceAccountTokenAuthenticatesClient(t *testing.T) {
	saTok := saToken(t, nsA, saName, 600, realmIssuer)
	c := claims(t, saTok)
	// What Keycloak matches on: iss (the identity provider's issuer), sub (the client's
	// jwt.credential.sub), aud (exactly the realm issuer).
	if c["iss"] != servers.IssuerURL || c["sub"] != "system:serviceaccount:team-a:sa1" {
		t.Fatalf("service-account token: iss=%v sub=%v, want %s and system:serviceaccount:team-a:sa1", c["iss"], c["sub"], servers.IssuerURL)
	}
	if aud, _ := c["aud"].([]any); len(aud) != 1 || aud[0] != realmIssuer {
		t.Fatalf("service-account token: aud=%v, want [%s]", c["aud"], realmIssuer)
	}

	// The first use makes Keycloak fetch the issuer's discovery document and JWKS (this is the
	// package's first grant: grant_test.go sorts first); later uses verify with the cached key.
	begin := time.Now()
	first := grant(t, saTok, nil)
	firstTook := time.Since(begin)
	if first.Status != http.StatusOK {
		t.Fatalf("client_credentials with the service-account token: %s", first.errorOf())
	}
	at := claims(t, first.str("access_token"))
	if at["azp"] != clientA || at["preferred_username"] != "service-account-"+clientA || at["iss"] != realmIssuer {
		t.Errorf("access token: azp=%v preferred_username=%v iss=%v, want %s, service-account-%s, %s", at["azp"], at["preferred_username"], at["iss"], clientA, clientA, realmIssuer)
	}
	// Measured: {"access_token":…,"expires_in":60,"refresh_expires_in":0,"token_type":"Bearer",
	// "not-before-policy":0,"scope":"email profile"}: no refresh token, as with a secret.
	// expires_in is exp minus Keycloak's clock when it answers: 60, or a second less.
	if exp, _ := first.Body["expires_in"].(float64); first.str("refresh_token") != "" || exp < 55 || exp > 60 {
		t.Errorf("token response: refresh_token present=%v expires_in=%v, want none and ~60 (realm lifespan)", first.str("refresh_token") != "", first.Body["expires_in"])
	}

	// Reuse: Keycloak's Kubernetes provider permits it (no jti replay check, unlike a
	// private_key_jwt assertion). Each use yields a new access token.
	begin = time.Now()
	const reuses = 5
	seen := map[any]bool{at["jti"]: true}
	for i := range reuses {
		a := grant(t, saTok, nil)
		if a.Status != http.StatusOK {
			t.Fatalf("use %d of the same service-account token: %s", i+2, a.errorOf())
		}
		jti := claims(t, a.str("access_token"))["jti"]
		if seen[jti] {
			t.Errorf("use %d: access token jti %v repeated", i+2, jti)
		}
		seen[jti] = true
	}
	t.Logf("first token request (with the JWKS fetch) %s; %d reuses %s each on average", firstTook.Round(time.Millisecond), reuses, (time.Since(begin) / reuses).Round(time.Millisecond))

	// client_id is optional: Keycloak finds the client by the token's (iss, sub). When sent it
	// must name that client.
	if a := grant(t, saTok, url.Values{"client_id": {clientA}}); a.Status != http.StatusOK {
		t.Errorf("with client_id=%s: %s", clientA, a.errorOf())
	}
	expectError(t, "client_id of another client", grant(t, saTok, url.Values{"client_id": {clientB}}),
		http.StatusBadRequest, "invalid_client", "client_id parameter does not match authenticated client")

	// The other namespace's service account gets its own client, never client A's.
	b := grant(t, saToken(t, nsB, saName, 600, realmIssuer), nil)
	if b.Status != http.StatusOK {
		t.Fatalf("team-b/sa1: %s", b.errorOf())
	}
	if azp := claims(t, b.str("access_token"))["azp"]; azp != clientB {
		t.Errorf("team-b/sa1's token authenticated %v, want %s", azp, clientB)
	}
}

// TestRevocationAndIntrospectionAcceptFederatedAuth: the revocation (RFC 7009) and
// introspection (RFC 7662) endpoints run the same client-authentication flow as the token
// endpoint, so the service-account token authenticates there too.
func TestRevocationAndIntrospectionAcceptFederatedAuth(t *testing.T) {
	saTok := saToken(t, nsA, saName, 600, realmIssuer)
	a := grant(t, saTok, nil)
	if a.Status != http.StatusOK {
		t.Fatalf("grant: %s", a.errorOf())
	}
	access := a.str("access_token")
	withToken := func(saTok string) url.Values {
		f := federatedAuth(saTok)
		f.Set("token", access)
		return f
	}

	in := post(t, endpoint("token/introspect"), withToken(saTok))
	if in.Status != http.StatusOK || in.Body["active"] != true || in.Body["client_id"] != clientA {
		t.Fatalf("introspection with federated auth: HTTP %d %.300s, want 200 active client_id=%s", in.Status, in.Raw, clientA)
	}

	// Another client (team-b/sa1's) may not revoke client A's token.
	other := post(t, endpoint("revoke"), withToken(saToken(t, nsB, saName, 600, realmIssuer)))
	expectError(t, "revocation by another client", other, http.StatusBadRequest, "invalid_request", "Unmatching clients")

	rv := post(t, endpoint("revoke"), withToken(saTok))
	if rv.Status != http.StatusOK || rv.Raw != "" {
		t.Fatalf("revocation with federated auth: HTTP %d %q, want 200 and an empty body", rv.Status, rv.Raw)
	}
	in = post(t, endpoint("token/introspect"), withToken(saTok))
	if in.Status != http.StatusOK || in.Body["active"] != false {
		t.Fatalf("introspection after revocation: HTTP %d %.300s, want 200 {\"active\":false}", in.Status, in.Raw)
	}
}

// TestRejections: what Keycloak answers when the service-account token does not fit. Two
// kinds: 401 "Invalid client or Invalid client credentials" when Keycloak cannot tell which
// client is meant or cannot check the signature (no client for the subject, unknown issuer,
// provider disabled, authenticator not in the flow, key not found), and 400 invalid_client with
// a precise description once the client is known and a claim is wrong.
func TestRejections(t *testing.T) {
	ctx := context.Background()
	if err := ensureServiceAccount(ctx, nsB, "unbound"); err != nil {
		t.Fatal(err)
	}
	unboundTok := saToken(t, nsB, "unbound", 600, realmIssuer)
	cases := []struct {
		name         string
		form         url.Values
		status       int
		err, message string
	}{
		{"service account bound to no client", withGrant(federatedAuth(unboundTok)),
			http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials"},
		{"service account bound to no client, with client_id of a bound client", withGrant(federatedAuth(unboundTok), "client_id", clientA),
			http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials"},
		{"team-b/sa1 with client_id of the client bound to team-a/sa1", withGrant(federatedAuth(saToken(t, nsB, saName, 600, realmIssuer)), "client_id", clientA),
			http.StatusBadRequest, "invalid_client", "client_id parameter does not match authenticated client"},
		{"audience mlflow", withGrant(federatedAuth(saToken(t, nsA, saName, 600, "mlflow"))),
			http.StatusBadRequest, "invalid_client", "Invalid token audience"},
		{"API server's default audience (no audience requested)", withGrant(federatedAuth(saToken(t, nsA, saName, 600))),
			http.StatusBadRequest, "invalid_client", "Invalid token audience"},
		{"realm issuer with a trailing slash", withGrant(federatedAuth(saToken(t, nsA, saName, 600, realmIssuer+"/"))),
			http.StatusBadRequest, "invalid_client", "Invalid token audience"},
		{"token endpoint as audience", withGrant(federatedAuth(saToken(t, nsA, saName, 600, endpoint("token")))),
			http.StatusBadRequest, "invalid_client", "Invalid token audience"},
		{"realm issuer and a second audience", withGrant(federatedAuth(saToken(t, nsA, saName, 600, realmIssuer, "mlflow"))),
			http.StatusBadRequest, "invalid_client", "Multiple audiences not allowed"},
		{"client secret instead of a token (the client has none)", url.Values{"grant_type": {"client_credentials"}, "client_id": {clientA}, "client_secret": {"anything"}},
			http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials"},
		{"client_id alone", url.Values{"grant_type": {"client_credentials"}, "client_id": {clientA}},
			http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials"},
		{"a string that is not a JWT", withGrant(federatedAuth("not-a-jwt")),
			http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := post(t, endpoint("token"), c.form)
			expectError(t, c.name, a, c.status, c.err, c.message)
		})
	}
}

// TestIdentityProviderIssuerMustMatchExactly: the provider's issuer is compared verbatim with
// the token's `iss`; a trailing slash (envtest's default issuer has one) is another issuer.
func TestIdentityProviderIssuerMustMatchExactly(t *testing.T) {
	ctx := context.Background()
	saTok := saToken(t, nsA, saName, 600, realmIssuer)
	t.Cleanup(func() { restoreIdP(t) })
	if err := kc.ConfigureKubernetesIdP(ctx, realm, keycloak.KubernetesIdP{IssuerURL: servers.IssuerURL + "/"}); err != nil {
		t.Fatal(err)
	}
	expectError(t, "issuer with a trailing slash", grant(t, saTok, nil), http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials")
	restoreIdP(t)
	if a := grant(t, saTok, nil); a.Status != http.StatusOK {
		t.Fatalf("issuer restored: %s", a.errorOf())
	}
}

// TestDeletedServiceAccountStillAccepted: deleting the ServiceAccount invalidates its tokens at
// the API server, but Keycloak only checks the signature, `exp` and age: it keeps accepting the
// token. Removing access means removing the client binding (or the client) in Keycloak, or
// waiting out the token (at most 3600 s after its iat).
func TestDeletedServiceAccountStillAccepted(t *testing.T) {
	ctx := context.Background()
	const sa = "deleted"
	if err := ensureServiceAccount(ctx, nsA, sa); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.AddFederatedClient(ctx, realm, keycloak.FederatedClient{ClientID: "federated-deleted", Subject: keycloak.ServiceAccountSubject(nsA, sa)}); err != nil {
		t.Fatal(err)
	}
	saTok := saToken(t, nsA, sa, 600, realmIssuer)
	if a := grant(t, saTok, nil); a.Status != http.StatusOK {
		t.Fatalf("before deletion: %s", a.errorOf())
	}
	if err := kube.CoreV1().ServiceAccounts(nsA).Delete(ctx, sa, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server's token authenticator looks service accounts up through an informer: the
	// deletion reaches it a moment later. Measured: authenticated=false, error "invalid bearer
	// token, serviceaccounts "deleted" not found".
	deadline := time.Now().Add(30 * time.Second)
	for {
		tr, err := kube.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: saTok, Audiences: []string{realmIssuer}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !tr.Status.Authenticated && strings.Contains(tr.Status.Error, `serviceaccounts "deleted" not found`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TokenReview 30 s after the deletion: %+v, want unauthenticated (service account not found)", tr.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if a := grant(t, saTok, nil); a.Status != http.StatusOK {
		t.Fatalf("Keycloak after the ServiceAccount was deleted: %s (it was expected to still accept the token)", a.errorOf())
	}
}

// TestCuttingAccess: how a platform team stops a service account's access at Keycloak, given
// that deleting the ServiceAccount does not: rebind the client to another subject, or disable
// the client. Both take effect at the next request (no cache in the way).
func TestCuttingAccess(t *testing.T) {
	ctx := context.Background()
	const sa = "cut"
	if err := ensureServiceAccount(ctx, nsA, sa); err != nil {
		t.Fatal(err)
	}
	id, err := kc.AddFederatedClient(ctx, realm, keycloak.FederatedClient{ClientID: "federated-cut", Subject: keycloak.ServiceAccountSubject(nsA, sa)})
	if err != nil {
		t.Fatal(err)
	}
	saTok := saToken(t, nsA, sa, 600, realmIssuer)
	if a := grant(t, saTok, nil); a.Status != http.StatusOK {
		t.Fatalf("before: %s", a.errorOf())
	}
	update := func(change func(rep map[string]any)) {
		t.Helper()
		path := "/admin/realms/" + realm + "/clients/" + id
		status, body, err := kc.Admin(ctx, http.MethodGet, path, nil)
		if err != nil || status != http.StatusOK {
			t.Fatalf("GET %s: HTTP %d %s %v", path, status, body, err)
		}
		var rep map[string]any
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatal(err)
		}
		change(rep)
		if status, body, err := kc.Admin(ctx, http.MethodPut, path, rep); err != nil || status != http.StatusNoContent {
			t.Fatalf("PUT %s: HTTP %d %s %v", path, status, body, err)
		}
	}
	setSubject := func(sub string) {
		update(func(rep map[string]any) { rep["attributes"].(map[string]any)[keycloak.AttrCredentialSubject] = sub })
	}

	setSubject(keycloak.ServiceAccountSubject(nsA, "someone-else"))
	expectError(t, "client rebound to another subject", grant(t, saTok, nil), http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials")
	setSubject(keycloak.ServiceAccountSubject(nsA, sa))
	if a := grant(t, saTok, nil); a.Status != http.StatusOK {
		t.Fatalf("bound again: %s", a.errorOf())
	}

	update(func(rep map[string]any) { rep["enabled"] = false })
	expectError(t, "client disabled", grant(t, saTok, nil), http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials")
}

func withGrant(form url.Values, kv ...string) url.Values {
	form.Set("grant_type", "client_credentials")
	for i := 0; i+1 < len(kv); i += 2 {
		form.Set(kv[i], kv[i+1])
	}
	return form
}

// expectError checks an OAuth error answer; an empty message matches any description.
func expectError(t *testing.T, what string, a oauthAnswer, status int, errCode, message string) {
	t.Helper()
	if a.Status != status || a.str("error") != errCode || (message != "" && a.str("error_description") != message) {
		t.Errorf("%s: got %s (%.300s), want HTTP %d %s: %s", what, a.errorOf(), a.Raw, status, errCode, message)
	}
}

// restoreIdP puts the realm's Kubernetes identity provider back to the suite's settings.
func restoreIdP(t *testing.T) {
	t.Helper()
	if err := kc.ConfigureKubernetesIdP(context.Background(), realm, keycloak.KubernetesIdP{IssuerURL: servers.IssuerURL}); err != nil {
		t.Fatal(err)
	}
}
