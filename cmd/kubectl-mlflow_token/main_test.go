package main

// Pure parts of the plugin: exit codes, the table, the inspect report, the checks of a
// bootstrapped token, output formats, flags and what the binary links. The commands themselves
// run against a real API server, Keycloak and operator in test/integration (TestPlugin*).

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/cmd/kubectl-mlflow_token/internal/deviceflow"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

func jwt(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(b) + ".c2lnbmF0dXJlLXNlY3JldA"
}

func TestExitCodes(t *testing.T) {
	nf := notFoundError{ns: "a", name: "x"}
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitError},
		{usagef("bad"), exitUsage},
		{fmt.Errorf("wrapped: %w", usagef("bad")), exitUsage},
		{nf, exitNotFound},
		{errors.Join(nf, notFoundError{ns: "a", name: "y"}), exitNotFound},
		{errors.Join(nf, errors.New("timeout")), exitError},
		{errors.Join(), exitOK},
		{notReadyError{msg: "x"}, exitNotReady},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// run maps cobra's own errors: an unknown command or flag is a usage error (exit 2), --help is 0.
func TestRunExitCodesWithoutAServer(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--help"}, exitOK}, {[]string{"bootstrap", "--help"}, exitOK}, {nil, exitOK},
		{[]string{"nosuch"}, exitUsage}, {[]string{"list", "--nosuch"}, exitUsage}, {[]string{"renew"}, exitUsage},
		{[]string{"list", "--kubeconfig", "/nonexistent/kubeconfig"}, exitError},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		if code != tc.want {
			t.Errorf("%v: exit %d, want %d\n%s%s", tc.args, code, tc.want, out.String(), errOut.String())
		}
	}
}

func TestTokenTable(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	items := []authv1alpha1.MLflowAccessToken{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "ok", CreationTimestamp: metav1.Time{Time: now.Add(-3 * time.Hour)}},
			Status: authv1alpha1.MLflowAccessTokenStatus{
				SecretName: "ok-secret", ExpiresAt: at(250 * time.Second), RenewalTime: at(-2 * time.Second), Rotations: 7,
				Conditions: []metav1.Condition{{Type: authv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: authv1alpha1.ReasonTokenValid, Message: "fine"}},
			},
		},
		{ObjectMeta: metav1.ObjectMeta{Name: "new", CreationTimestamp: metav1.Time{Time: now}}},
	}
	tab := tokenTable(items, now)
	got := fmt.Sprint(tab.Rows[0].Cells)
	want := fmt.Sprint([]any{"ok", "True", "TokenValid", "ok-secret", "in 4m10s", "due 2s ago", "3h", int64(7), "2026-11-30T12:04:10Z", "2026-11-30T11:59:58Z", "fine"})
	if got != want {
		t.Errorf("row\n got %s\nwant %s", got, want)
	}
	got = fmt.Sprint(tab.Rows[1].Cells)
	want = fmt.Sprint([]any{"new", "Unknown", "<none>", "<none>", "<none>", "<none>", "0s", int64(0), "<none>", "<none>", "<none>"})
	if got != want {
		t.Errorf("row without status\n got %s\nwant %s", got, want)
	}
	if until(at(-90*time.Second), now, "expired") != "expired 90s ago" {
		t.Error(until(at(-90*time.Second), now, "expired"))
	}
}

// The report shows the claims of the token in the Secret, never the token.
func TestInspectReportHoldsNoToken(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	token := jwt(map[string]any{"iss": "https://kc/realms/r", "sub": "s-1", "preferred_username": "alice", "azp": "cli",
		"aud": "mlflow", "scope": "openid", "groups": []string{"g"}, "sid": "sess", "jti": "j-1", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
	obj := &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Name: "t", Namespace: "ns"},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			Keycloak: &authv1alpha1.KeycloakSpec{URL: "https://kc", Realm: "r", ClientID: "cli"},
			Grant:    authv1alpha1.GrantSpec{Type: authv1alpha1.GrantPassword},
		},
		Status: authv1alpha1.MLflowAccessTokenStatus{
			SecretName: "t", ExpiresAt: &metav1.Time{Time: now.Add(time.Minute)}, SessionID: "sess", OfflineSession: true,
			FailedAttempts: 2, LastFailureTime: &metav1.Time{Time: now.Add(-time.Second)},
			Conditions: []metav1.Condition{
				{Type: authv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: authv1alpha1.ReasonRenewalFailing},
				{Type: authv1alpha1.ConditionRenewalFailing, Status: metav1.ConditionTrue, Reason: authv1alpha1.ReasonKeycloakTimeout, Message: "slow"},
			},
		},
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "t", Namespace: "ns"}, Data: map[string][]byte{tokensecret.KeyToken: []byte(token)}}
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(sec).Build()
	r := buildReport(context.Background(), c, obj, now)
	var text bytes.Buffer
	printReport(&text, r, now)
	js, _ := json.Marshal(r)
	for _, out := range []string{text.String(), string(js)} {
		if strings.Contains(out, token) || strings.Contains(out, "c2lnbmF0dXJlLXNlY3JldA") || strings.Contains(out, strings.Split(token, ".")[1]) {
			t.Errorf("the report holds the token:\n%s", out)
		}
	}
	for _, want := range []string{"preferred_username:  alice", "sess (offline)", "2 attempt(s) in a row: KeycloakTimeout: slow", "exp:                 2026-11-30T12:01:00Z (in 1m0s)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, text.String())
		}
	}
	if !r.Ready || r.Claims.PreferredUsername != "alice" || r.ExpiresAt.Seconds != 60 {
		t.Errorf("report = %+v", r)
	}

	// Without the Secret, the reason is shown instead of claims.
	r = buildReport(context.Background(), fake.NewClientBuilder().WithScheme(scheme.New()).Build(), obj, now)
	if r.Claims != nil || r.ClaimsError != "Secret t does not exist" {
		t.Errorf("claims error = %q", r.ClaimsError)
	}
}

func TestCheckRefreshToken(t *testing.T) {
	acc := &keycloakAccess{URL: "https://kc", Realm: "r", ClientID: "cli"}
	tok := func(claims map[string]any) *deviceflow.Token { return &deviceflow.Token{RefreshToken: jwt(claims)} }
	var warn bytes.Buffer
	kind, err := checkRefreshToken(tok(map[string]any{"iss": "https://kc/realms/r", "azp": "cli", "typ": "Offline"}), acc, true, &warn)
	if err != nil || kind != "an offline token" || warn.Len() > 0 {
		t.Errorf("offline: %q %v %q", kind, err, warn.String())
	}
	kind, err = checkRefreshToken(tok(map[string]any{"iss": "https://kc/realms/r", "azp": "cli", "typ": "Refresh"}), acc, true, &warn)
	if err != nil || kind != "a refresh token" || !strings.Contains(warn.String(), "not an offline token") {
		t.Errorf("refresh when offline was asked: %q %v %q", kind, err, warn.String())
	}
	for name, claims := range map[string]map[string]any{
		"other issuer host": {"iss": "https://other/realms/r", "azp": "cli"},
		"other client":      {"iss": "https://kc/realms/r", "azp": "not-cli"},
	} {
		if _, err := checkRefreshToken(tok(claims), acc, true, &warn); err == nil || !strings.Contains(err.Error(), "nothing was written") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := checkRefreshToken(&deviceflow.Token{AccessToken: "x"}, acc, true, &warn); err == nil {
		t.Error("no refresh token accepted")
	}
}

func TestResourcePrinter(t *testing.T) {
	for _, ok := range []string{"json", "yaml", "name", "jsonpath={.items[*].metadata.name}", "jsonpath-as-json={.items}"} {
		if _, err := resourcePrinter(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"xml", "jsonpath", "jsonpath={.items[", "go-template={{.}}", "jsonpath-file=/nonexistent"} {
		_, err := resourcePrinter(bad)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%s: %v, want a usage error", bad, err)
		}
	}
}

// kubectl's connection flags exist on every command; -A, -l and -o where they make sense.
func TestFlags(t *testing.T) {
	root := newRootCommand(genericiooptions.NewTestIOStreamsDiscard(), time.Now)
	for _, f := range []string{"kubeconfig", "context", "cluster", "user", "namespace", "request-timeout", "server", "token",
		"as", "as-group", "as-uid", "certificate-authority", "client-certificate", "client-key", "insecure-skip-tls-verify", "tls-server-name"} {
		if root.PersistentFlags().Lookup(f) == nil {
			t.Errorf("no --%s", f)
		}
	}
	if root.PersistentFlags().ShorthandLookup("n") == nil || root.PersistentFlags().ShorthandLookup("s") == nil {
		t.Error("no -n or -s")
	}
	want := map[string][]string{
		"list":      {"all-namespaces", "selector", "output", "no-headers", "show-labels"},
		"inspect":   {"output", "require-ready"},
		"status":    {"output", "require-ready"}, // an alias of inspect
		"renew":     {"all-namespaces", "selector", "all", "wait", "timeout"},
		"revoke":    {"all-namespaces", "selector", "all", "wait", "timeout"},
		"bootstrap": {"offline", "wait", "timeout"},
		"version":   {"client", "output"},
	}
	for name, flags := range want {
		cmd, _, err := root.Find([]string{name})
		if err != nil || (cmd.Name() != name && !slices.Contains(cmd.Aliases, name)) {
			t.Fatalf("no command %s: %v", name, err)
		}
		for _, f := range flags {
			if cmd.Flags().Lookup(f) == nil {
				t.Errorf("%s has no --%s", name, f)
			}
		}
	}
}

// The plugin links the API types and client libraries, never the operator (its reconciler,
// wiring or Keycloak client), nor kustomize and Go's plugin loader (see kubeFlags).
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	const mod = "github.com/mlflow-token-operator/mlflow-token-operator/"
	for _, d := range deps {
		switch {
		case strings.HasPrefix(d, mod+"controllers"), strings.HasPrefix(d, mod+"internal/manager"),
			strings.HasPrefix(d, mod+"internal/keycloak"), strings.HasPrefix(d, mod+"internal/renewal"),
			strings.HasPrefix(d, mod+"internal/metrics"), strings.HasPrefix(d, "github.com/Nerzal/gocloak"),
			strings.HasPrefix(d, "sigs.k8s.io/kustomize"), d == "plugin", d == "k8s.io/cli-runtime/pkg/resource":
			t.Errorf("the plugin links %s", d)
		}
	}
	if len(deps) < 100 {
		t.Fatalf("go list returned %d packages; the check would prove little", len(deps))
	}
}

// Without a kubeconfig the plugin says where it looked and how to name one, not client-go's
// "try setting KUBERNETES_MASTER". (test/integration runs the binary the same way with a HOME
// without ~/.kube/config.)
func TestNoKubeconfig(t *testing.T) {
	dir := t.TempDir()
	home := clientcmd.RecommendedHomeFile // computed from $HOME when the process starts
	clientcmd.RecommendedHomeFile = filepath.Join(dir, ".kube", "config")
	t.Cleanup(func() { clientcmd.RecommendedHomeFile = home })
	t.Setenv("KUBERNETES_SERVICE_HOST", "")              // not a pod
	t.Setenv("KUBERNETES_MASTER", "https://127.0.0.1:1") // client-go's hint, which changes nothing
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kubeconfigEnv string
		args          []string
		want          []string
	}{
		{"", []string{"list"}, []string{"$KUBECONFIG is not set and ~/.kube/config (" + clientcmd.RecommendedHomeFile + ") does not exist"}},
		{"", []string{"inspect", "x", "-n", "a"}, []string{"$KUBECONFIG is not set"}},
		{"/nonexistent" + string(filepath.ListSeparator) + empty, []string{"renew", "x"},
			[]string{"$KUBECONFIG names /nonexistent (does not exist), " + empty + " (defines no cluster)", "read only when KUBECONFIG is unset"}},
		{"", []string{"list", "--kubeconfig", empty}, []string{"--kubeconfig " + empty + " defines no cluster"}},
	} {
		t.Setenv("KUBECONFIG", tc.kubeconfigEnv)
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		msg := errOut.String()
		if code != exitError || strings.Contains(msg, "KUBERNETES_MASTER") || !strings.HasPrefix(msg, "error: no kubeconfig found: ") ||
			!strings.Contains(msg, "--kubeconfig FILE, or export KUBECONFIG=FILE") {
			t.Errorf("%v with KUBECONFIG=%q: exit %d\n%s", tc.args, tc.kubeconfigEnv, code, msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%v: the message lacks %q:\n%s", tc.args, w, msg)
			}
		}
	}
}

// Events written by an events.k8s.io recorder (series) and by a core/v1 one (deprecated count and
// timestamps) fold alike.
func TestFoldedEvent(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	micro := func(d time.Duration) metav1.MicroTime { return metav1.MicroTime{Time: t0.Add(d)} }
	for _, tc := range []struct {
		name string
		ev   eventsv1.Event
		want string
	}{
		{"single", eventsv1.Event{EventTime: micro(0), ReportingController: "op"}, "1 12:00:00 12:00:00 op"},
		{"series", eventsv1.Event{EventTime: micro(0), Series: &eventsv1.EventSeries{Count: 7, LastObservedTime: micro(time.Minute)}}, "7 12:00:00 12:01:00 "},
		{"core/v1", eventsv1.Event{DeprecatedFirstTimestamp: metav1.Time{Time: t0}, DeprecatedLastTimestamp: metav1.Time{Time: t0.Add(time.Hour)},
			DeprecatedCount: 3, DeprecatedSource: corev1.EventSource{Component: "old"}}, "3 12:00:00 13:00:00 old"},
		{"no time", eventsv1.Event{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.Time{Time: t0}}}, "1 12:00:00 12:00:00 "},
	} {
		e := foldedEvent(tc.ev)
		if got := fmt.Sprintf("%d %s %s %s", e.Count, e.First.Format(time.TimeOnly), e.Last.Format(time.TimeOnly), e.From); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// What inspect says about each kind of consumer pod (the verdict itself is internal/consumers').
func TestConsumerPodDelivery(t *testing.T) {
	vol := []corev1.Volume{{Name: "t", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}}}
	mounted := corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{{Name: "t", MountPath: "/m"}}}
	pod := func(labelled bool, phase corev1.PodPhase, c corev1.Container, init bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Volumes: vol}, Status: corev1.PodStatus{Phase: phase}}
		if labelled {
			p.Labels = map[string]string{authv1alpha1.LabelConsumer: "true"}
		}
		if init {
			p.Spec.InitContainers = []corev1.Container{c}
		} else {
			p.Spec.Containers = []corev1.Container{c}
		}
		return p
	}
	for _, tc := range []struct {
		pod    *corev1.Pod
		nudged bool
		want   string
	}{
		{pod(true, corev1.PodRunning, mounted, false), true, "nudged after each rotation"},
		{pod(false, corev1.PodRunning, mounted, false), false, "not nudged (no label"},
		{pod(true, corev1.PodSucceeded, mounted, false), false, "finished"},
		{pod(true, corev1.PodRunning, mounted, true), false, "only an init container"},
		{pod(true, corev1.PodRunning, corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{{Name: "t", MountPath: "/m/token", SubPath: "token"}}}, false), false, "env or subPath only"},
	} {
		p, ok := consumerPod(tc.pod, "s")
		if !ok || p.Nudged != tc.nudged || !strings.HasPrefix(p.Delivery, tc.want) {
			t.Errorf("%+v: %v %+v, want nudged=%v %q", tc.pod.Spec, ok, p, tc.nudged, tc.want)
		}
	}
	if _, ok := consumerPod(pod(true, corev1.PodRunning, mounted, false), "other"); ok {
		t.Error("a pod that does not read the Secret is a consumer")
	}
}

// The plugin's REST mapping is static (no discovery): every kind a command reads or writes must
// be in it, or the request fails with "no matches for kind". bootstrap reads issuers and asks for
// ServiceAccount tokens; inspect lists pods and events.
func TestRESTMapperKnowsEveryKind(t *testing.T) {
	s := scheme.New()
	for _, obj := range []client.Object{&authv1alpha1.MLflowAccessToken{}, &authv1alpha1.KeycloakIssuer{}, &authv1alpha1.ClusterKeycloakIssuer{},
		&corev1.Secret{}, &corev1.ConfigMap{}, &corev1.Namespace{}, &corev1.Pod{}, &corev1.ServiceAccount{}, &eventsv1.Event{}, &appsv1.Deployment{}} {
		gvk, err := apiutil.GVKForObject(obj, s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := restMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			t.Errorf("%s: %v", gvk, err)
		}
	}
}
