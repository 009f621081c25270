package federated

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
)

// TestServiceAccountTokenLifetime: the API server issues no token shorter than 600 s; Keycloak
// does not refuse long ones, it refuses any token more than 3600 s after its iat (the Kubernetes
// provider's default for the identity provider setting fedClientAssertionMaxExp), whatever its
// exp. So a cached service-account token is good for min(exp, iat+3600).
func TestServiceAccountTokenLifetime(t *testing.T) {
	ctx := context.Background()
	_, err := requestSAToken(ctx, nsA, saName, 599, realmIssuer)
	// Measured: `TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds:
	// Invalid value: 599: may not specify a duration less than 10 minutes`.
	if err == nil || !strings.Contains(err.Error(), "may not specify a duration less than 10 minutes") {
		t.Errorf("TokenRequest with expirationSeconds 599: err=%v, want the 10-minute minimum", err)
	}
	// envtest sets no --service-account-max-token-expiration, so the API server issues what is
	// asked; a real cluster may cap it (and stretches only kubelet-projected tokens).
	for _, seconds := range []int64{600, 3600, 7200, 86400} {
		saTok := saToken(t, nsA, saName, seconds, realmIssuer)
		c := claims(t, saTok)
		if got := int64(c["exp"].(float64) - c["iat"].(float64)); got != seconds {
			t.Errorf("TokenRequest %d s: exp-iat=%d", seconds, got)
		}
		if a := grant(t, saTok, nil); a.Status != http.StatusOK {
			t.Errorf("fresh token of %d s: %s", seconds, a.errorOf())
		}
	}

	// The age limit, shown with a 5 s limit instead of waiting an hour: a fresh 600 s token is
	// accepted, the same token 7 s after its iat is not.
	t.Cleanup(func() { restoreIdP(t) })
	if err := kc.ConfigureKubernetesIdP(ctx, realm, keycloak.KubernetesIdP{IssuerURL: servers.IssuerURL, MaxTokenAge: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	saTok := saToken(t, nsA, saName, 600, realmIssuer)
	iat := int64(claims(t, saTok)["iat"].(float64))
	sent := time.Now().Unix()
	switch a := grant(t, saTok, nil); {
	case a.Status == http.StatusOK:
	case sent <= iat+4:
		t.Fatalf("fresh token under a 5 s age limit: %s", a.errorOf())
	default:
		t.Logf("the fresh token's request went out %d s after its iat (a loaded machine): only the refusal is checked", sent-iat)
	}
	// Keycloak refuses when now > iat+5 in whole seconds; wait until that holds with a margin.
	time.Sleep(time.Until(time.Unix(iat+7, 0)))
	expectError(t, "token older than the age limit", grant(t, saTok, nil),
		http.StatusBadRequest, "invalid_client", "Token was issued too far in the past to be used now")
}
