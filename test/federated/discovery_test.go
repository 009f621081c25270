package federated

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// TestIssuerDiscoveryIsAnonymous: what Keycloak fetches, fetched the way Keycloak does (no
// credentials, trusting only the API server's CA): the discovery document names the issuer and a
// loopback JWKS URI, and it is the ClusterRoleBinding testenv adds that makes it readable:
// without it the anonymous request is refused (Kubernetes binds the discovery role to service
// accounts only).
func TestIssuerDiscoveryIsAnonymous(t *testing.T) {
	ctx := context.Background()
	caPEM, err := os.ReadFile(servers.IssuerCAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	get := func(u string) (int, []byte) {
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	status, body := get(servers.IssuerURL + "/.well-known/openid-configuration")
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &doc) != nil {
		t.Fatalf("anonymous discovery: HTTP %d %s", status, body)
	}
	if doc.Issuer != servers.IssuerURL || doc.JWKSURI != servers.IssuerURL+"/openid/v1/jwks" {
		t.Errorf("discovery: issuer=%q jwks_uri=%q, want %q and %q/openid/v1/jwks", doc.Issuer, doc.JWKSURI, servers.IssuerURL, servers.IssuerURL)
	}
	if status, body := get(doc.JWKSURI); status != http.StatusOK {
		t.Fatalf("anonymous JWKS: HTTP %d %s", status, body)
	}

	crbs := kube.RbacV1().ClusterRoleBindings()
	crb, err := crbs.Get(ctx, testenv.IssuerDiscoveryBinding, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := crbs.Delete(ctx, crb.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		restored := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: crb.Name}, RoleRef: crb.RoleRef, Subjects: crb.Subjects}
		if _, err := crbs.Create(ctx, restored, metav1.CreateOptions{}); err != nil {
			t.Errorf("restoring %s: %v", crb.Name, err)
			return
		}
		if err := testenv.WaitForIssuerDiscovery(ctx, servers.IssuerURL, caPEM, 30*time.Second); err != nil {
			t.Error(err)
		}
	})
	// The authorizer sees the deletion through an informer: poll.
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body = get(servers.IssuerURL + "/.well-known/openid-configuration")
		if status == http.StatusForbidden {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("anonymous discovery without the binding: still HTTP %d %s, want 403", status, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("without the binding: HTTP %d %s", status, body)
}
