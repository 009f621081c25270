package packaging

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/manager"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/renewal"
)

// scriptedKeycloak stands in for Keycloak by client id: "good" always issues, "bad" is always
// rejected, "flaky" issues once and then Keycloak is unreachable. Methods the test does not
// script are left to the embedded nil interface (a call would panic and fail the test).
type scriptedKeycloak struct {
	keycloak.Client
	lifetime time.Duration
	calls    sync.Map // client id -> *atomic.Int32
}

func (k *scriptedKeycloak) ClientCredentials(_ context.Context, _ keycloak.Endpoint, c keycloak.Credentials, _ []string) (*keycloak.Token, error) {
	n, _ := k.calls.LoadOrStore(c.ClientID, new(atomic.Int32))
	call := n.(*atomic.Int32).Add(1)
	switch {
	case c.ClientID == "bad":
		return nil, &keycloak.Error{Reason: keycloak.ReasonInvalidClientCredentials, StatusCode: 401, Message: "Keycloak rejected the client credentials (invalid_client)"}
	case c.ClientID == "flaky" && call > 1:
		return nil, &keycloak.Error{Reason: keycloak.ReasonUnreachable, Message: "dial tcp 127.0.0.1:1: connect: connection refused"}
	}
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{"jti": fmt.Sprintf("%s-%d", c.ClientID, call), "iss": "https://keycloak.example.com/realms/mlflow",
		"sub": "sa-" + c.ClientID, "preferred_username": "service-account-" + c.ClientID, "azp": c.ClientID, "aud": "mlflow",
		"iat": now.Unix(), "exp": now.Add(k.lifetime).Unix(), "typ": "Bearer"})
	enc := base64.RawURLEncoding.EncodeToString
	return &keycloak.Token{AccessToken: enc([]byte(`{"alg":"none"}`)) + "." + enc(claims) + ".c2ln", ExpiresIn: k.lifetime}, nil
}

func (k *scriptedKeycloak) Revoke(context.Context, keycloak.Endpoint, keycloak.Credentials, string, string) error {
	return nil
}

// TestArgoCDHealthOfLiveOperator runs the operator (internal/manager, wired as cmd/main.go wires
// it) against a real API server with a scripted Keycloak, records every status the operator
// writes for a healthy, a misconfigured and a flaky token over several rotations, and runs the
// Argo CD health check over each recorded object. A healthy token must stay Healthy through its
// rotations; a flaky one is Healthy with a "renewal failing" message while its token is valid and
// Degraded once it expired; a misconfigured one is Degraded.
func TestArgoCDHealthOfLiveOperator(t *testing.T) {
	tool(t, "argocd-lua")
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests with `make test` (hack/build-envtest.sh builds etcd and kube-apiserver into bin/k8s)")
	}
	// Its own API server: this one has the CRD installed for real, which would turn the other
	// tests' dry-run creates of the CRD into AlreadyExists.
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot(t), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting a second API server with the CRD: %v", err)
	}
	defer func() { _ = env.Stop() }()

	kc := &scriptedKeycloak{lifetime: 6 * time.Second}
	o := manager.Defaults()
	o.MetricsAddr, o.ProbeAddr = "0", "0"
	o.Keycloak = kc
	o.Backoff = renewal.Backoff{Initial: 500 * time.Millisecond, Max: time.Second}
	o.RevocationTimeout = 2 * time.Second
	o.SkipNameValidation = true
	mgr, err := manager.New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() { cancel(); <-done }()

	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	const ns = "argo-health"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "kc-client", Namespace: ns},
		StringData: map[string]string{"client-secret": "not-a-real-secret"}}))
	for _, id := range []string{"good", "bad", "flaky"} {
		must(c.Create(ctx, &authv1alpha1.MLflowAccessToken{
			ObjectMeta: metav1.ObjectMeta{Name: id, Namespace: ns},
			Spec: authv1alpha1.MLflowAccessTokenSpec{
				Keycloak: authv1alpha1.KeycloakSpec{URL: "https://keycloak.example.com", Realm: "mlflow", ClientID: id,
					ClientSecretRef: authv1alpha1.SecretKeyRef{Name: "kc-client"}},
				Grant: authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
			},
		}))
	}

	// Record every distinct object the API server holds, until the healthy token rotated
	// three times and the flaky one's token expired.
	seen := map[string]bool{}
	var recorded []*authv1alpha1.MLflowAccessToken
	deadline := time.Now().Add(40 * time.Second)
	for {
		var list authv1alpha1.MLflowAccessTokenList
		must(c.List(ctx, &list, client.InNamespace(ns)))
		goodRotations, flakyExpired := int64(0), false
		for i := range list.Items {
			o := &list.Items[i]
			if !seen[o.Name+"@"+o.ResourceVersion] {
				seen[o.Name+"@"+o.ResourceVersion] = true
				cp := o.DeepCopy()
				cp.APIVersion, cp.Kind = authv1alpha1.GroupVersion.String(), "MLflowAccessToken"
				recorded = append(recorded, cp)
			}
			switch o.Name {
			case "good":
				goodRotations = o.Status.Rotations
			case "flaky":
				r := meta.FindStatusCondition(o.Status.Conditions, authv1alpha1.ConditionReady)
				flakyExpired = r != nil && r.Status == metav1.ConditionFalse
			}
		}
		if goodRotations >= 3 && flakyExpired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 40 s: good rotated %d times, flaky expired %v", goodRotations, flakyExpired)
		}
		time.Sleep(100 * time.Millisecond)
	}

	results := argoHealth(t, recorded)
	var flakyFailingHealthy, flakyDegraded, badDegraded, goodHealthy int
	for i, h := range results {
		o := recorded[i]
		ready := meta.FindStatusCondition(o.Status.Conditions, authv1alpha1.ConditionReady)
		desc := fmt.Sprintf("%s rv=%s rotations=%d ready=%v", o.Name, o.ResourceVersion, o.Status.Rotations, ready)
		if h.Error != "" {
			t.Errorf("%s: the script failed: %s", desc, h.Error)
			continue
		}
		// Before the operator's first status write the object has no status: Progressing.
		if ready == nil {
			if h.Status != "Progressing" {
				t.Errorf("%s: %s, want Progressing before the first status", desc, h.Status)
			}
			continue
		}
		switch o.Name {
		case "good":
			if h.Status != "Healthy" {
				t.Errorf("%s: %s %q, want Healthy at every rotation", desc, h.Status, h.Message)
			}
			goodHealthy++
		case "bad":
			if h.Status != "Degraded" || !strings.Contains(h.Message, authv1alpha1.ReasonInvalidClientCredentials) {
				t.Errorf("%s: %s %q, want Degraded with the reason", desc, h.Status, h.Message)
			}
			badDegraded++
		case "flaky":
			switch {
			case ready.Status == metav1.ConditionTrue && ready.Reason == authv1alpha1.ReasonRenewalFailing:
				if h.Status != "Healthy" || !strings.Contains(h.Message, "renewal failing") {
					t.Errorf("%s: %s %q, want Healthy saying renewal is failing", desc, h.Status, h.Message)
				}
				flakyFailingHealthy++
			case ready.Status == metav1.ConditionFalse:
				if h.Status != "Degraded" {
					t.Errorf("%s: %s %q, want Degraded once the token expired", desc, h.Status, h.Message)
				}
				flakyDegraded++
			}
		}
	}
	if goodHealthy < 3 || badDegraded == 0 || flakyFailingHealthy == 0 || flakyDegraded == 0 {
		t.Errorf("not every state was seen: good Healthy %d, bad Degraded %d, flaky Healthy-while-failing %d, flaky Degraded %d",
			goodHealthy, badDegraded, flakyFailingHealthy, flakyDegraded)
	}
	t.Logf("checked %d recorded objects", len(recorded))
}
