package federated

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
)

func isAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }

// saToken asks the API server for a token of the service account ns/name (TokenRequest) with the
// given audiences and lifetime.
func saToken(t *testing.T, ns, name string, seconds int64, audiences ...string) string {
	t.Helper()
	tok, err := requestSAToken(context.Background(), ns, name, seconds, audiences...)
	if err != nil {
		t.Fatalf("TokenRequest %s/%s: %v", ns, name, err)
	}
	return tok
}

func requestSAToken(ctx context.Context, ns, name string, seconds int64, audiences ...string) (string, error) {
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &seconds},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// oauthAnswer is a token, introspection or revocation endpoint's answer.
type oauthAnswer struct {
	Status int
	Body   map[string]any
	Raw    string
}

func (a oauthAnswer) str(k string) string { s, _ := a.Body[k].(string); return s }

// errorOf is "HTTP <status> <error>: <error_description>", the form the comments record.
func (a oauthAnswer) errorOf() string {
	return "HTTP " + strconv.Itoa(a.Status) + " " + a.str("error") + ": " + a.str("error_description")
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

func post(t *testing.T, endpoint string, form url.Values) oauthAnswer {
	t.Helper()
	resp, err := httpClient.PostForm(endpoint, form)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	a := oauthAnswer{Status: resp.StatusCode, Raw: string(b)}
	_ = json.Unmarshal(b, &a.Body)
	return a
}

func endpoint(name string) string {
	return realmIssuer + "/protocol/openid-connect/" + name
}

// federatedAuth is the client authentication with a service-account token: no client secret.
func federatedAuth(saTok string) url.Values {
	return url.Values{"client_assertion_type": {keycloak.ClientAssertionTypeJWT}, "client_assertion": {saTok}}
}

// grant asks for a client_credentials token, authenticating with saTok; extra adds parameters.
func grant(t *testing.T, saTok string, extra url.Values) oauthAnswer {
	t.Helper()
	form := federatedAuth(saTok)
	form.Set("grant_type", "client_credentials")
	for k, v := range extra {
		form[k] = v
	}
	return post(t, endpoint("token"), form)
}

// claims decodes a JWT's payload without checking it.
func claims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// testenvIssuerDown checks that nothing answers on the issuer's address any more.
func testenvIssuerDown() error {
	u, err := url.Parse(servers.IssuerURL)
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("issuer %s still accepts connections after the API server stopped", servers.IssuerURL)
	}
	return nil
}
