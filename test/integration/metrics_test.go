package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// scrape reads the operator's /metrics endpoint.
func scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
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

// The metrics endpoint agrees with status, and forgets deleted resources.
func TestMetricsMatchStatus(t *testing.T) {
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
