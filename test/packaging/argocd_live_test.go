package packaging

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak/keycloaktest"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/manager"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// TestArgoCDHealthOfLiveOperator runs the operator (internal/manager, wired as cmd/main.go wires
// it) against a real API server with an in-memory Keycloak (keycloaktest), records every status
// the operator writes for a healthy, a misconfigured and a flaky token over several rotations,
// and runs the Argo CD health check and kstatus (what Flux and kstatus-based waits use) over each
// recorded object:
//
//	                                      Argo CD       kstatus
//	before the operator's first status    Progressing   InProgress
//	healthy, at every rotation            Healthy       Current
//	misconfigured (client rejected)       Degraded      Failed (Stalled)
//	flaky, renewal failing, token valid   Healthy       Current
//	flaky, token expired, still retrying  Degraded      InProgress (Reconciling)
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

	// "good" and "flaky" are clients Keycloak knows, "bad" is not; the flaky one's Keycloak (its
	// own realm) answers once and is unreachable after that.
	kc := keycloaktest.New(clock.RealClock{}, "good", "not-a-real-secret")
	kc.SetClientSecret("flaky", "not-a-real-secret")
	kc.AccessLifetime = 6 * time.Second
	var flakyCalls atomic.Int32
	kc.Fail = func(op keycloak.Op) error {
		if op.Realm == "flaky" && op.Endpoint == "token" && flakyCalls.Add(1) > 1 {
			return keycloaktest.Unreachable(op)
		}
		return nil
	}
	o := manager.Defaults()
	o.MetricsAddr, o.ProbeAddr = "0", "0"
	o.Keycloak = kc
	o.Reconciler.Backoff = policy.Backoff{Initial: 500 * time.Millisecond, Max: time.Second}
	o.Reconciler.RevocationTimeout = 2 * time.Second
	o.SkipNameValidation = true
	if err := testenv.EnsureNamespace(context.Background(), cfg, testenv.OperatorNamespace); err != nil {
		t.Fatal(err)
	}
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
				Keycloak: &authv1alpha1.KeycloakSpec{URL: "https://keycloak.example.com", Realm: realmOf(id), ClientID: id,
					ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "kc-client"}},
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
	var kstatusSeen = map[string]bool{}
	var flakyFailingHealthy, flakyDegraded, badDegraded, goodHealthy int
	for i, h := range results {
		o := recorded[i]
		ready := meta.FindStatusCondition(o.Status.Conditions, authv1alpha1.ConditionReady)
		desc := fmt.Sprintf("%s rv=%s rotations=%d ready=%v", o.Name, o.ResourceVersion, o.Status.Rotations, ready)
		if h.Error != "" {
			t.Errorf("%s: the script failed: %s", desc, h.Error)
			continue
		}
		ks := kstatusOf(t, o)
		kstatusSeen[o.Name+"/"+ks] = true
		// Before the operator's first status write the object has only the defaulted
		// observedGeneration -1: Progressing, and InProgress for kstatus (not Current, which would
		// let a Flux or kstatus wait pass before the operator did anything).
		if ready == nil {
			if h.Status != "Progressing" || ks != "InProgress" {
				t.Errorf("%s: %s / kstatus %s, want Progressing / InProgress before the first status", desc, h.Status, ks)
			}
			continue
		}
		switch o.Name {
		case "good":
			if h.Status != "Healthy" || ks != "Current" {
				t.Errorf("%s: %s %q / kstatus %s, want Healthy / Current at every rotation", desc, h.Status, h.Message, ks)
			}
			goodHealthy++
		case "bad":
			if h.Status != "Degraded" || !strings.Contains(h.Message, authv1alpha1.ReasonInvalidClientCredentials) || ks != "Failed" {
				t.Errorf("%s: %s %q / kstatus %s, want Degraded with the reason / Failed", desc, h.Status, h.Message, ks)
			}
			badDegraded++
		case "flaky":
			switch {
			case ready.Status == metav1.ConditionTrue && ready.Reason == authv1alpha1.ReasonRenewalFailing:
				if h.Status != "Healthy" || !strings.Contains(h.Message, "renewal failing") || ks != "Current" {
					t.Errorf("%s: %s %q / kstatus %s, want Healthy saying renewal is failing / Current", desc, h.Status, h.Message, ks)
				}
				flakyFailingHealthy++
			case ready.Status == metav1.ConditionFalse:
				if h.Status != "Degraded" || ks != "InProgress" {
					t.Errorf("%s: %s %q / kstatus %s, want Degraded / InProgress once the token expired (the operator keeps trying)", desc, h.Status, h.Message, ks)
				}
				flakyDegraded++
			}
		}
	}
	if goodHealthy < 3 || badDegraded == 0 || flakyFailingHealthy == 0 || flakyDegraded == 0 {
		t.Errorf("not every state was seen: good Healthy %d, bad Degraded %d, flaky Healthy-while-failing %d, flaky Degraded %d",
			goodHealthy, badDegraded, flakyFailingHealthy, flakyDegraded)
	}
	t.Logf("checked %d recorded objects; kstatus seen: %v", len(recorded), kstatusSeen)
}

func realmOf(clientID string) string {
	if clientID == "flaky" {
		return "flaky"
	}
	return "mlflow"
}

// kstatusOf computes the kstatus of a recorded object, as Flux and kstatus-based waits do.
func kstatusOf(t *testing.T, o *authv1alpha1.MLflowAccessToken) string {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		t.Fatal(err)
	}
	res, err := kstatus.Compute(&unstructured.Unstructured{Object: m})
	if err != nil {
		t.Fatalf("kstatus of %s: %v", o.Name, err)
	}
	return res.Status.String()
}
