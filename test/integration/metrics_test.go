package integration

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// metricsGet asks the operator's metrics endpoint (HTTPS with a self-signed certificate) with a
// bearer token ("": none).
func metricsGet(t *testing.T, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://"+metricsAddr+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

var (
	readerOnce  sync.Once
	readerToken string
)

// serviceAccountToken returns a token of a new ServiceAccount in a new namespace, bound to the
// metrics reader ClusterRole of config/rbac when bound is true.
func serviceAccountToken(t *testing.T, bound bool) string {
	t.Helper()
	ctx := context.Background()
	ns := newNamespace(t)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "prometheus"}}
	if err := k8s.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	if bound {
		role := &rbacv1.ClusterRole{}
		if err := yaml.Unmarshal(mustReadRepoFile(t, "config/rbac/metrics_reader_role.yaml"), role); err != nil {
			t.Fatal(err)
		}
		role.Name = "it-" + ns + "-metrics-reader"
		binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: ns}}}
		for _, o := range []client.Object{role, binding} {
			if err := k8s.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}
	if err := k8s.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// scrape reads the operator's /metrics endpoint as an authorized reader.
func scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	readerOnce.Do(func() { readerToken = serviceAccountToken(t, true) })
	resp := metricsGet(t, readerToken)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics endpoint answered %s to an authorized reader", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// The metrics endpoint answers only callers the API server authenticates and authorizes for GET
// /metrics: an anonymous scrape gets 401, a ServiceAccount without the metrics reader role 403,
// one bound to config/rbac's metrics reader role the metrics.
func TestMetricsEndpointRequiresAuthorization(t *testing.T) {
	t.Parallel()
	testenv.Eventually(t, 30*time.Second, "the metrics endpoint to listen", func() (bool, string) {
		conn, err := net.DialTimeout("tcp", metricsAddr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, ""
	})
	for _, c := range []struct {
		name  string
		token string
		want  int
	}{
		{"anonymous", "", http.StatusUnauthorized},
		{"a forged token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", http.StatusUnauthorized},
		{"a ServiceAccount without the role", serviceAccountToken(t, false), http.StatusForbidden},
		{"a ServiceAccount with the metrics reader role", serviceAccountToken(t, true), http.StatusOK},
	} {
		resp := metricsGet(t, c.token)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %s, want %d", c.name, resp.Status, c.want)
		}
		if c.want != http.StatusOK && strings.Contains(string(body), metrics.NameReady) {
			t.Errorf("%s: the answer holds metrics", c.name)
		}
	}
}

// The metrics endpoint agrees with status, and forgets deleted resources.
func TestMetricsMatchStatus(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	create(t, newToken(ns, "metered"))
	obj := waitReady(t, ns, "metered", 30*time.Second)
	id := map[string]string{"namespace": ns, "name": "metered"}

	var fams map[string]*dto.MetricFamily
	testenv.Eventually(t, 10*time.Second, "metrics matching status", func() (bool, string) {
		obj = get(t, ns, "metered")
		fams = scrape(t)
		exp, ok1 := sample(fams, metrics.NameExpiry, id)
		ren, ok2 := sample(fams, metrics.NameRenewal, id)
		rdy, ok3 := sample(fams, metrics.NameReady, id)
		return ok1 && ok2 && ok3 && int64(exp) == obj.Status.ExpiresAt.Unix() && int64(ren) == obj.Status.RenewalTime.Unix() && rdy == 1,
			"expiry/renewal/ready from /metrics do not match status yet"
	})
	if v, ok := sample(fams, metrics.NameKeycloakRequests, map[string]string{"grant": "client_credentials", "endpoint": "token", "outcome": "success"}); !ok || v < 1 {
		t.Errorf("keycloak request counter = %v, %v", v, ok)
	}
	if v, ok := sample(fams, metrics.NameKeycloakDuration, map[string]string{"grant": "client_credentials", "endpoint": "token"}); !ok || v < 1 {
		t.Errorf("keycloak latency histogram count = %v, %v", v, ok)
	}
	for name := range fams {
		if strings.HasPrefix(name, "mlflow_token_") {
			for _, m := range fams[name].GetMetric() {
				for _, l := range m.GetLabel() {
					if strings.Count(l.GetValue(), ".") == 2 && len(l.GetValue()) > 100 {
						t.Errorf("metric %s has a label value that looks like a token", name)
					}
				}
			}
		}
	}

	deleteAndWait(t, obj, 30*time.Second)
	testenv.Eventually(t, 5*time.Second, "the deleted resource's series to go", func() (bool, string) {
		fams = scrape(t)
		_, ok := sample(fams, metrics.NameExpiry, id)
		return !ok, "expiry series of a deleted resource is still exported"
	})
	if v, ok := sample(fams, metrics.NameRevocations, map[string]string{"outcome": "revoked"}); !ok || v < 1 {
		t.Errorf("revocation counter = %v, %v", v, ok)
	}
}

func mustReadRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
