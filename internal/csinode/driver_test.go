package csinode

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
)

const (
	kcURL    = "https://kc.example.com"
	audience = kcURL + "/realms/mlflow"
)

// fakeLookup serves one cluster issuer and namespace labels.
type fakeLookup struct {
	issuer *authv1alpha1.ClusterKeycloakIssuer
	labels map[string]map[string]string
}

func (f *fakeLookup) ClusterIssuer(_ context.Context, name string) (*authv1alpha1.ClusterKeycloakIssuer, error) {
	if f.issuer == nil || f.issuer.Name != name {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "clusterkeycloakissuers"}, name)
	}
	return f.issuer.DeepCopy(), nil
}

func (f *fakeLookup) Issuer(_ context.Context, _, name string) (*authv1alpha1.KeycloakIssuer, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "keycloakissuers"}, name)
}

func (f *fakeLookup) NamespaceLabels(_ context.Context, name string) (map[string]string, error) {
	return f.labels[name], nil
}

func (f *fakeLookup) ConfigMap(_ context.Context, key types.NamespacedName) (*corev1.ConfigMap, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, key.Name)
}

// fakeKeycloak mints JWTs with the fake clock's times and records calls.
type fakeKeycloak struct {
	mu       sync.Mutex
	clk      *clocktesting.FakeClock
	life     time.Duration
	down     bool
	tokens   int
	revoked  []string
	lastAuth keycloak.ClientAuth
}

func (k *fakeKeycloak) Token(_ context.Context, ep keycloak.Endpoint, auth keycloak.ClientAuth, _ keycloak.Grant) (*keycloak.Token, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.down {
		return nil, &keycloak.Error{Reason: keycloak.ReasonUnreachable, Message: "token request: cannot reach Keycloak"}
	}
	if auth.Assertion == "" || auth.Secret != "" {
		return nil, &keycloak.Error{Reason: keycloak.ReasonInvalidClientCredentials, Message: "no assertion"}
	}
	k.tokens++
	k.lastAuth = auth
	now := k.clk.Now()
	return &keycloak.Token{AccessToken: jwt(map[string]any{"sub": auth.ClientID, "iat": now.Unix(), "exp": now.Add(k.life).Unix(), "n": k.tokens}), ExpiresIn: k.life}, nil
}

func (k *fakeKeycloak) Revoke(_ context.Context, _ keycloak.Endpoint, _ keycloak.ClientAuth, token, _ string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.down {
		return &keycloak.Error{Reason: keycloak.ReasonUnreachable, Message: "revocation: cannot reach Keycloak"}
	}
	k.revoked = append(k.revoked, token)
	return nil
}

func (k *fakeKeycloak) Introspect(context.Context, keycloak.Endpoint, keycloak.ClientAuth, string, string) (bool, error) {
	return false, errors.New("not used")
}

func (k *fakeKeycloak) DeleteSession(context.Context, keycloak.Endpoint, string, string, bool) (bool, error) {
	return false, errors.New("not used")
}

func (k *fakeKeycloak) Discover(context.Context, keycloak.Endpoint) (string, error) {
	return "", errors.New("not used")
}

func (k *fakeKeycloak) set(f func(k *fakeKeycloak)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f(k)
}

func (k *fakeKeycloak) counts() (int, int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.tokens, len(k.revoked)
}

func jwt(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(b) + ".sig"
}

type env struct {
	t      *testing.T
	clk    *clocktesting.FakeClock
	kc     *fakeKeycloak
	lookup *fakeLookup
	d      *Driver
	root   string // the kubelet's pods directory
	state  string
}

func newEnv(t *testing.T) *env {
	clk := clocktesting.NewFakeClock(time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC))
	e := &env{t: t, clk: clk, kc: &fakeKeycloak{clk: clk, life: 300 * time.Second}, root: t.TempDir(), state: filepath.Join(t.TempDir(), "volumes")}
	e.lookup = &fakeLookup{issuer: &authv1alpha1.ClusterKeycloakIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "mlflow"},
		Spec: authv1alpha1.ClusterKeycloakIssuerSpec{KeycloakIssuerSpec: authv1alpha1.KeycloakIssuerSpec{
			URL: kcURL, Realm: "mlflow", ClientAuth: authv1alpha1.IssuerClientAuth{ServiceAccount: &authv1alpha1.ServiceAccountAuth{Name: "x"}},
			MLflow: &authv1alpha1.MLflowSpec{TrackingURI: "https://mlflow.example.com"},
		}},
		Status: authv1alpha1.KeycloakIssuerStatus{Conditions: []metav1.Condition{{Type: authv1alpha1.ConditionReady, Status: metav1.ConditionTrue}}},
	}}
	e.restart()
	return e
}

// restart starts a new driver over the same state directory (a crash: the old one's timers are
// left to fire into a driver nobody calls).
func (e *env) restart() {
	d, err := New(Config{NodeID: "node", StateDir: e.state}, e.lookup, e.kc, e.clk, logr.Discard())
	if err != nil {
		e.t.Fatal(err)
	}
	if e.d != nil {
		e.d.mu.Lock()
		for _, v := range e.d.vols {
			v.mu.Lock()
			if v.timer != nil {
				v.timer.Stop()
			}
			v.gone = true
			v.mu.Unlock()
		}
		e.d.mu.Unlock()
	}
	e.d = d
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	d.Start(ctx)
}

func (e *env) target(pod string) string {
	return filepath.Join(e.root, "pods", pod, "volumes", "kubernetes.io~csi", "mlflow", "mount")
}

func (e *env) publish(pod, ns, sa string, attrs map[string]string) error {
	e.t.Helper()
	if err := os.MkdirAll(filepath.Dir(e.target(pod)), 0o750); err != nil {
		e.t.Fatal(err)
	}
	vc := map[string]string{ctxPodName: pod, ctxPodNamespace: ns, ctxPodUID: pod, ctxServiceAccount: sa, ctxEphemeral: "true"}
	for k, v := range attrs {
		vc[k] = v
	}
	sat := jwt(map[string]any{"sub": "system:serviceaccount:" + ns + ":" + sa, "aud": audience})
	toks, _ := json.Marshal(map[string]serviceAccountToken{audience: {Token: sat, Expires: e.clk.Now().Add(time.Hour)}})
	return e.d.publish(context.Background(), "vol-"+pod, e.target(pod), vc, map[string]string{ctxTokens: string(toks)})
}

func (e *env) token(pod string) string { return publishedToken(e.target(pod)) }

// step advances the clock and lets the timers' goroutines run.
func (e *env) step(d time.Duration) {
	e.clk.Step(d)
	time.Sleep(20 * time.Millisecond)
}

func (e *env) eventually(what string, f func() bool) {
	e.t.Helper()
	// Generous: a loaded machine (go test ./... runs packages side by side) may be slow; a
	// passing test returns at the first true.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if f() {
			return
		}
	}
	e.t.Fatalf("timed out waiting for %s", what)
}

var attrs = map[string]string{AttrIssuerRef: "ClusterKeycloakIssuer/mlflow", AttrClientID: "team-a-training"}

func TestPublishRotateUnpublish(t *testing.T) {
	e := newEnv(t)
	if err := e.publish("p1", "team-a", "trainer", attrs); err != nil {
		t.Fatal(err)
	}
	first := e.token("p1")
	if first == "" {
		t.Fatal("no token file")
	}
	if e.kc.lastAuth.ClientID != "team-a-training" || !strings.Contains(e.kc.lastAuth.Assertion, ".") {
		t.Errorf("Keycloak was asked with %q and no assertion", e.kc.lastAuth.ClientID)
	}
	if b, _ := os.ReadFile(filepath.Join(e.target("p1"), FileTrackingURI)); string(b) != "https://mlflow.example.com" {
		t.Errorf("tracking URI file: %q", b)
	}
	fi, err := os.Stat(filepath.Join(e.state, "vol-p1.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("record: %v %v", fi, err)
	}
	// Republish keeps the token.
	if err := e.publish("p1", "team-a", "trainer", attrs); err != nil || e.token("p1") != first {
		t.Fatalf("republish: %v, token changed: %v", err, e.token("p1") != first)
	}
	// At two thirds of 300 s less up to a tenth as jitter (170-200 s) the token rotates in place.
	e.step(169 * time.Second)
	if e.token("p1") != first {
		t.Fatal("rotated before the renewal time")
	}
	e.step(32 * time.Second)
	e.eventually("a rotation", func() bool { return e.token("p1") != first })
	// Keycloak down at the next renewal: the token stays, retries back off; back: rotates.
	second := e.token("p1")
	e.kc.set(func(k *fakeKeycloak) { k.down = true })
	e.step(200 * time.Second)
	if e.token("p1") != second {
		t.Fatal("the token changed while Keycloak was down")
	}
	e.kc.set(func(k *fakeKeycloak) { k.down = false })
	for i := 0; i < 10 && e.token("p1") == second; i++ {
		e.step(10 * time.Second)
	}
	if e.token("p1") == second {
		t.Fatal("no rotation after Keycloak came back")
	}
	last := e.token("p1")
	if err := e.d.unpublish(context.Background(), "vol-p1", e.target("p1")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.target("p1")); !os.IsNotExist(err) {
		t.Errorf("the target directory is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.state, "vol-p1.json")); !os.IsNotExist(err) {
		t.Errorf("the record is still there: %v", err)
	}
	if e.kc.revoked[len(e.kc.revoked)-1] != last {
		t.Error("the last token was not revoked")
	}
}

func TestRefusalsWriteNothing(t *testing.T) {
	e := newEnv(t)
	e.lookup.issuer.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"mlflow": "on"}}
	e.lookup.labels = map[string]map[string]string{"team-a": {"mlflow": "on"}}
	for _, tc := range []struct {
		name, ns, sa string
		attrs        map[string]string
		code         codes.Code
		says         string
	}{
		{"namespace not admitted", "team-b", "trainer", attrs, codes.PermissionDenied, "does not admit namespace team-b"},
		{"default ServiceAccount", "team-a", "default", attrs, codes.InvalidArgument, "ServiceAccount \"default\""},
		{"unknown issuer", "team-a", "trainer", map[string]string{AttrIssuerRef: "ClusterKeycloakIssuer/nope"}, codes.NotFound, "ClusterKeycloakIssuer nope does not exist"},
		{"unknown attribute", "team-a", "trainer", map[string]string{AttrIssuerRef: "ClusterKeycloakIssuer/mlflow", "clientId": "x"}, codes.InvalidArgument, "unknown volume attribute \"clientId\""},
		{"missing audience", "team-a", "trainer", nil, codes.FailedPrecondition, "no service-account token for the audience " + kcURL + "/realms/other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.attrs
			if a == nil { // the issuer moves to another realm: the kubelet's token is for the old one
				e.lookup.issuer.Spec.Realm = "other"
				defer func() { e.lookup.issuer.Spec.Realm = "mlflow" }()
				a = attrs
			}
			before, _ := e.kc.counts()
			err := e.publish("p-"+strings.ReplaceAll(tc.name, " ", "-"), tc.ns, tc.sa, a)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %v, want %s saying %q", err, tc.code, tc.says)
			}
			if after, _ := e.kc.counts(); after != before {
				t.Error("Keycloak was asked")
			}
			if e.d.count() != 0 {
				t.Error("a volume is tracked")
			}
			if entries, _ := os.ReadDir(e.state); len(entries) != 0 {
				t.Errorf("state written: %v", entries)
			}
		})
	}
}

func TestRestartResumesAndRevokesEndedPods(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"running", "ended"} {
		if err := e.publish(p, "team-a", "trainer", attrs); err != nil {
			t.Fatal(err)
		}
	}
	running := e.token("running")
	ended := e.token("ended")
	// The plugin dies; meanwhile the kubelet cleans up the ended pod without it.
	e.restartAfter(func() { os.RemoveAll(filepath.Join(e.root, "pods", "ended")) })
	// The sweep revokes, then forgets the volume: wait for both.
	e.eventually("the ended pod's token revoked and its volume forgotten", func() bool {
		e.kc.mu.Lock()
		defer e.kc.mu.Unlock()
		return len(e.kc.revoked) == 1 && e.kc.revoked[0] == ended && e.d.count() == 1
	})
	e.step(200 * time.Second)
	e.eventually("the running pod's rotation after the restart", func() bool { return e.token("running") != running })
}

func (e *env) restartAfter(f func()) {
	f()
	e.restart()
}

func TestFilesSwapAtomically(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mount")
	for i := 0; i < 3; i++ {
		if err := publishFiles(dir, map[string][]byte{FileToken: []byte(fmt.Sprint("t", i))}); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 3 || publishedToken(dir) != "t2" { // ..data, one version, token
		t.Fatalf("after three versions: %v, token %q", names, publishedToken(dir))
	}
	if err := wipeFiles(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir left: %v", err)
	}
}
