package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/mlflowcheck"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// Clients of realm-e2e.json for the MLflow acceptance check.
const (
	// noAudClientID: like clientID (group mlflow_users, groups claim), without an audience mapper:
	// its tokens lack the audience MLflow pins (OIDC_AUDIENCE).
	noAudClientID     = "mlflow-noaud"
	noAudClientSecret = "mlflowNoAudTestSecret0004"
	// noGroupClientID: audience mlflow, groups mapper, but its service account is in no group, so
	// mlflow-oidc-auth does not provision it.
	noGroupClientID     = "mlflow-nogroup"
	noGroupClientSecret = "mlflowNoGroupTestSecret0005"
)

// TestMLflowAcceptedCondition is issue 11 part 5 end to end: the operator asks the real MLflow
// (mlflow-oidc-auth, audience and issuer pinned) whether it accepts each resource's first token.
// (a) The operator's client, whose tokens carry aud=mlflow: MLflowAccepted=True.
// (b) A client without the audience mapper: MLflowAccepted=False with a message naming the
// audience, a Warning event, while Ready stays True and kstatus reads Current.
func TestMLflowAcceptedCondition(t *testing.T) {
	t.Parallel()
	dumpOnFailure(t)
	ns := newNamespace(t)
	for name, secret := range map[string]string{"kc-operator": clientSecret, "kc-noaud": noAudClientSecret} {
		if err := k8s.Create(context.Background(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			StringData: map[string]string{"client-secret": secret},
		}); err != nil {
			t.Fatal(err)
		}
	}
	resource := func(name, client, secretName string) *authv1alpha1.MLflowAccessToken {
		return &authv1alpha1.MLflowAccessToken{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: authv1alpha1.MLflowAccessTokenSpec{
				Keycloak: &authv1alpha1.KeycloakSpec{URL: kcServer.URL(), Realm: realm, ClientID: client,
					ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: secretName}},
				Grant:  authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
				MLflow: &authv1alpha1.MLflowSpec{TrackingURI: mlflowSrv.URL},
			},
		}
	}
	accepted, rejected := resource("accepted", clientID, "kc-operator"), resource("rejected", noAudClientID, "kc-noaud")
	begin := time.Now()
	for _, o := range []*authv1alpha1.MLflowAccessToken{accepted, rejected} {
		if err := k8s.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("accepted", func(t *testing.T) {
		c := waitMLflowAccepted(t, ns, accepted.Name, metav1.ConditionTrue)
		t.Logf("MLflowAccepted=True after %s: %s", time.Since(begin).Round(time.Millisecond), c.Message)
		if c.Reason != authv1alpha1.ReasonMLflowAccepted || !strings.Contains(c.Message, `accepts the token as user "`+saUsername+`"`) {
			t.Fatalf("condition %+v", c)
		}
		checkHealthy(t, ns, accepted.Name, 1)
	})
	t.Run("rejected: no audience for MLflow", func(t *testing.T) {
		c := waitMLflowAccepted(t, ns, rejected.Name, metav1.ConditionFalse)
		t.Logf("MLflowAccepted=False after %s: %s", time.Since(begin).Round(time.Millisecond), c.Message)
		if c.Reason != authv1alpha1.ReasonMLflowRejected {
			t.Fatalf("condition %+v", c)
		}
		for _, want := range []string{"answered 401", "Likely cause", "audience", "OIDC_AUDIENCE", "audience mapper"} {
			if !strings.Contains(c.Message, want) {
				t.Errorf("message %q does not name the audience problem (%q)", c.Message, want)
			}
		}
		checkHealthy(t, ns, rejected.Name, 0)
		testenv.Eventually(t, 30*time.Second, "the MLflowRejected Warning event", func() (bool, string) {
			evs := &eventsv1.EventList{}
			if err := k8s.List(context.Background(), evs, client.InNamespace(ns)); err != nil {
				return false, err.Error()
			}
			var seen []string
			for _, ev := range evs.Items {
				if ev.Regarding.Name == rejected.Name && ev.Type == corev1.EventTypeWarning && ev.Reason == authv1alpha1.ReasonMLflowRejectedEvent {
					return strings.Contains(ev.Note, "OIDC_AUDIENCE"), ev.Note
				}
				seen = append(seen, ev.Reason)
			}
			return false, strings.Join(seen, ",")
		})
	})
}

// waitMLflowAccepted waits for the MLflowAccepted condition to reach status.
func waitMLflowAccepted(t *testing.T, ns, name string, status metav1.ConditionStatus) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	testenv.Eventually(t, 90*time.Second, name+" MLflowAccepted="+string(status), func() (bool, string) {
		obj := &authv1alpha1.MLflowAccessToken{}
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, obj); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionMLflowAccepted)
		if c == nil {
			return false, "no MLflowAccepted condition"
		}
		got = *c
		return c.Status == status, string(c.Status) + "/" + c.Reason + ": " + c.Message
	})
	return got
}

// checkHealthy: Ready=True, kstatus Current (a rejection by MLflow is neither progress nor a
// failure of the resource), and the metric says what MLflow answered.
func checkHealthy(t *testing.T, ns, name string, metric float64) {
	t.Helper()
	obj := &authv1alpha1.MLflowAccessToken{}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, obj); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready = %+v, want True", c)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(authv1alpha1.GroupVersion.String())
	u.SetKind("MLflowAccessToken")
	if res, err := kstatus.Compute(u); err != nil || res.Status != kstatus.CurrentStatus {
		t.Errorf("kstatus = %+v, %v; want Current", res, err)
	}
	// The operator runs in this process: its metrics are in controller-runtime's registry.
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range families {
		if mf.GetName() != metrics.NameMLflowAccepted {
			continue
		}
		for _, s := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range s.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["namespace"] == ns && l["name"] == name {
				found = true
				if v := s.GetGauge().GetValue(); v != metric {
					t.Errorf("%s = %v, want %v", metrics.NameMLflowAccepted, v, metric)
				}
			}
		}
	}
	if !found {
		t.Errorf("no %s series for %s/%s", metrics.NameMLflowAccepted, ns, name)
	}
}

// TestMLflowCheckAnswers measures what mlflow-oidc-auth answers to the check's request
// (GET /api/2.0/mlflow/users/current) for each kind of token the troubleshooting list names, and
// what the checker makes of it: the figures behind docs/troubleshooting.md. Each case is a real
// token from the test Keycloak.
func TestMLflowCheckAnswers(t *testing.T) {
	t.Parallel()
	dumpOnFailure(t)
	checker := mlflowcheck.New(mlflowcheck.Options{Timeout: 20 * time.Second}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan struct{})
	go func() { _ = checker.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	check := func(t *testing.T, name, token string) mlflowcheck.Result {
		t.Helper()
		// The raw answer, as the report quotes it.
		status, body := mlflowSrv.Call(t, "GET", "/api/2.0/mlflow/users/current", token, nil)
		t.Logf("GET /api/2.0/mlflow/users/current: HTTP %d %s", status, strings.TrimSpace(string(body)))
		key := types.NamespacedName{Namespace: "measure", Name: name}
		checker.Submit(mlflowcheck.Request{Key: key, TrackingURI: mlflowSrv.URL, Token: token, TokenID: name})
		var res *mlflowcheck.Result
		testenv.Eventually(t, 60*time.Second, "the check of "+name, func() (bool, string) {
			var pending string
			res, pending = checker.Lookup(key)
			return res != nil && pending == "", "pending " + pending
		})
		t.Logf("checker: %s (HTTP %d): %s", res.Outcome, res.Status, res.Message)
		if strings.Contains(res.Message, token) {
			t.Fatal("the token is in the result")
		}
		return *res
	}
	want := func(t *testing.T, res mlflowcheck.Result, outcome mlflowcheck.Outcome, parts ...string) {
		t.Helper()
		if res.Outcome != outcome {
			t.Fatalf("outcome %s, want %s", res.Outcome, outcome)
		}
		for _, p := range parts {
			if !strings.Contains(res.Message, p) {
				t.Errorf("message %q lacks %q", res.Message, p)
			}
		}
	}

	t.Run("service account with audience and group", func(t *testing.T) {
		want(t, check(t, "operator", clientCredentialsToken(t, kcServer.URL(), clientID, clientSecret)), mlflowcheck.Accepted, `as user "`+saUsername+`"`)
	})
	t.Run("human admin (email claim)", func(t *testing.T) {
		want(t, check(t, "admin", adminToken(t)), mlflowcheck.Accepted, `as user "`+adminEmail+`"`)
	})
	t.Run("no audience for MLflow", func(t *testing.T) {
		want(t, check(t, "noaud", clientCredentialsToken(t, kcServer.URL(), noAudClientID, noAudClientSecret)), mlflowcheck.Rejected,
			"answered 401", "Likely cause", "audience", "OIDC_AUDIENCE")
	})
	t.Run("in no group: not provisioned", func(t *testing.T) {
		want(t, check(t, "nogroup", clientCredentialsToken(t, kcServer.URL(), noGroupClientID, noGroupClientSecret)), mlflowcheck.Rejected,
			"answered 401", "Likely cause", "no groups claim", "OIDC_GROUP_NAME")
	})
	t.Run("issuer differs (token requested through another host name)", func(t *testing.T) {
		other := strings.Replace(kcServer.URL(), "127.0.0.1", "localhost", 1)
		tok := clientCredentialsToken(t, other, clientID, clientSecret)
		iss, _ := jwtClaims(t, tok)["iss"].(string)
		if !strings.HasPrefix(iss, "http://localhost:") {
			t.Fatalf("iss %q: Keycloak did not take the host name from the request", iss)
		}
		want(t, check(t, "issuer", tok), mlflowcheck.Rejected, "answered 401", `OIDC_ISSUER must equal iss "`+iss+`"`)
	})
	t.Run("expired", func(t *testing.T) {
		// The checker never sends an expired token (it reports Expired); this measures MLflow.
		tok := clientCredentialsToken(t, kcServer.URL(), clientID, clientSecret)
		exp := time.Unix(int64(num(jwtClaims(t, tok)["exp"])), 0)
		time.Sleep(time.Until(exp) + 1500*time.Millisecond)
		status, body := mlflowSrv.Call(t, "GET", "/api/2.0/mlflow/users/current", tok, nil)
		t.Logf("expired token: HTTP %d %s", status, strings.TrimSpace(string(body)))
		if status != http.StatusUnauthorized {
			t.Fatalf("HTTP %d for an expired token, want 401", status)
		}
		res := check(t, "expired", tok)
		want(t, res, mlflowcheck.Expired, "expired before MLflow could be asked")
	})
}

// clientCredentialsToken asks Keycloak at base for a client-credentials token.
func clientCredentialsToken(t *testing.T, base, id, secret string) string {
	t.Helper()
	return realmToken(t, base, "client credentials for "+id,
		url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}})
}
