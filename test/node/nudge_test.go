package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/manager"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// The nudge measurement: the operator (in this process, wired as cmd/main.go wires it) rotates
// 20-second tokens from a real Keycloak into Secrets that probe pods mount on the real kubelet.
const (
	nudgeNS            = "nudge"
	nudgeTokenLifespan = 20 * time.Second
	// nudgeBound is the generous per-delivery bound that makes a broken nudge fail loudly; the
	// figures (p99 well under 2 s) are printed, not asserted.
	nudgeBound = 10 * time.Second
	// kubeletLatest is when a Secret change must have reached a pod that is not nudged: 1.5 ×
	// syncFrequency, and slack for a loaded machine.
	kubeletLatest = 95 * time.Second
)

// TestNudgedRotation measures how long a rotated token takes to become readable in running pods,
// with the nudge (pods labelled auth.mlflow-token-operator.io/consumer=true) and without it
// (unlabelled pods of the same operator: the kubelet's default periodic sync), in the same run.
//
// Each pod runs the probe on the Secret's expiresAt key (it changes with every token, in the same
// atomic volume update as the token; the token itself is never printed). The delay of a rotation
// for a pod runs from the moment this test's watch saw the new token in the Secret until the probe
// in the pod read that token or a newer one (the kubelet delivers the latest content, skipping
// tokens written between two syncs). Also printed: how much of the time pods held an expired
// token, the nudge's API cost (pod patches per rotation per pod), and how the nudged delay splits
// into write → patch (the operator) and patch → file (the kubelet).
//
// It asserts that every rotation arrived in every pod, and that nudged pods got each within
// nudgeBound. A longer measurement: NODE_NUDGE_WINDOW (default 2m), NODE_NUDGE_RESOURCES (nudged
// resources, each rotating on its own schedule; default 3), NODE_NUDGE_PODS (labelled pods per
// nudged resource; default 2), NODE_NUDGE_DEFAULT_PODS (unlabelled pods of the one resource
// that is not nudged; default 16).
func TestNudgedRotation(t *testing.T) {
	// Side by side with the other measurement (each in its own namespace, pods and Secrets): both
	// mostly wait for kubelet syncs. The tests that compare the host's state are not parallel and
	// run first.
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := theNode.Client()
	window := envDuration(t, "NODE_NUDGE_WINDOW", 2*time.Minute)
	nudgedResources := envCount(t, "NODE_NUDGE_RESOURCES", 3)
	nudgedPodsEach := envCount(t, "NODE_NUDGE_PODS", 2)
	defaultPods := envCount(t, "NODE_NUDGE_DEFAULT_PODS", 16)
	begin := time.Now()

	// Keycloak takes longest: start it first.
	kcDone := make(chan struct{})
	var kc *keycloak.Server
	var kcErr error
	go func() { defer close(kcDone); kc, kcErr = startShortTokenKeycloak(ctx, t) }()
	defer func() {
		<-kcDone
		if kc != nil {
			kc.Close()
		}
	}()

	if err := theNode.EnsureNamespace(ctx, nudgeNS, restricted); err != nil {
		t.Fatal(err)
	}
	if _, err := envtest.InstallCRDs(theNode.RESTConfig(), envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(repoRoot(), "config", "crd", "bases")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("installing the CRDs: %v", err)
	}
	k8s, err := client.New(theNode.RESTConfig(), client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	rec := newDeliveryRecorder()
	if err := rec.watch(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().Secrets(nudgeNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "mlflow-client", Namespace: nudgeNS},
		Data:       map[string][]byte{"client-secret": []byte("mlflowOperatorTestSecret0001")},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	<-kcDone
	if kcErr != nil {
		t.Fatalf("Keycloak: %v", kcErr)
	}
	stopOperator, err := startNodeOperator(ctx)
	if err != nil {
		t.Fatalf("starting the operator: %v", err)
	}
	defer stopOperator()

	type group struct {
		resource string
		pods     []string
		nudged   bool
	}
	var groups []group
	for r := range nudgedResources {
		g := group{resource: fmt.Sprintf("nudged-%d", r), nudged: true}
		for p := range nudgedPodsEach {
			g.pods = append(g.pods, fmt.Sprintf("%s-%d", g.resource, p))
		}
		groups = append(groups, g)
	}
	def := group{resource: "default"}
	for p := range defaultPods {
		def.pods = append(def.pods, fmt.Sprintf("default-%02d", p))
	}
	groups = append(groups, def)

	for _, g := range groups {
		if err := k8s.Create(ctx, tokenResource(g.resource, kc.URL())); err != nil {
			t.Fatal(err)
		}
	}
	defer deleteTokenResources(t, k8s)
	for _, g := range groups {
		if err := waitFor(2*time.Minute, 250*time.Millisecond, func() error {
			_, err := c.CoreV1().Secrets(nudgeNS).Get(ctx, g.resource, metav1.GetOptions{})
			return err
		}); err != nil {
			t.Fatalf("the operator wrote no Secret %s: %v", g.resource, err)
		}
	}
	for _, g := range groups {
		for _, p := range g.pods {
			pod := probePod(nudgeNS, p, g.resource, "-watch", "/etc/secret/expiresAt")
			if g.nudged {
				pod.Labels = map[string]string{authv1alpha1.LabelConsumer: "true"}
			}
			if _, err := c.CoreV1().Pods(nudgeNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer func() {
		for _, g := range groups {
			deletePods(c, g.pods)
		}
	}()
	for _, g := range groups {
		for _, p := range g.pods {
			if err := waitRunning(ctx, c, nudgeNS, p, 3*time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := waitFor(time.Minute, 250*time.Millisecond, func() error {
				log, err := podLog(ctx, c, nudgeNS, p)
				if err != nil || !strings.HasPrefix(log, "seen ") {
					return fmt.Errorf("pod %s has not read its Secret yet (%v)", p, err)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t0 := time.Now()
	t.Logf("Keycloak, operator, %d pods running and reading their Secrets after %s; measuring for %s",
		len(def.pods)+nudgedResources*nudgedPodsEach, t0.Sub(begin).Round(100*time.Millisecond), window)
	load := []string{loadAverage()}
	time.Sleep(window / 2)
	load = append(load, loadAverage())
	time.Sleep(window - window/2)
	t1 := time.Now()
	load = append(load, loadAverage())

	// The rotations of the window, and each pod's log until every rotation arrived.
	type sample struct {
		pod         string
		delay       time.Duration
		write, seen time.Time
		nudge       time.Time // zero when the pod was not nudged for it
	}
	results := map[bool][]sample{}
	rotations := map[bool]int{}
	expired := map[bool]time.Duration{}
	podTime := map[bool]time.Duration{}
	patches := map[bool]int{} // pod patches between a rotation and the next, per group
	var problems []string
	for _, g := range groups {
		last := t1
		if !g.nudged {
			last = t1.Add(-kubeletLatest) // later ones may not have arrived yet: not counted
		}
		writes := rec.writesOf(g.resource, t0, last)
		later := rec.writesOf(g.resource, last, last.Add(time.Hour))
		rotations[g.nudged] += len(writes)
		if len(writes) == 0 {
			t.Fatalf("no rotation of %s between %s and %s", g.resource, t0.Format(time.TimeOnly), last.Format(time.TimeOnly))
		}
		for _, p := range g.pods {
			var lines []seenLine
			err := waitFor(kubeletLatest+30*time.Second, time.Second, func() error {
				log, err := podLog(ctx, c, nudgeNS, p)
				if err != nil {
					return err
				}
				lines = seenLines(log)
				if w := writes[len(writes)-1]; firstSeen(lines, w.expiresAt).IsZero() {
					return fmt.Errorf("pod %s has not read the token of %s (written %s) yet", p, g.resource, w.at.Format(time.TimeOnly))
				}
				return nil
			})
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			for i, w := range writes {
				next := w.at.Add(time.Minute)
				if i+1 < len(writes) {
					next = writes[i+1].at
				} else if len(later) > 0 {
					next = later[0].at
				}
				patches[g.nudged] += rec.patchesIn(w.at, next, p)
				seen := firstSeen(lines, w.expiresAt)
				s := sample{pod: p, delay: seen.Sub(w.at), write: w.at, seen: seen, nudge: rec.nudgeOf(p, w.at)}
				results[g.nudged] = append(results[g.nudged], s)
				if g.nudged && s.delay > nudgeBound {
					problems = append(problems, fmt.Sprintf("nudged pod %s read the token written at %s only %s later (nudged at %s)",
						p, w.at.Format("15:04:05.000"), s.delay.Round(time.Millisecond), fmtStamp(s.nudge)))
				}
			}
			e, total := expiredTime(lines, t0, t1)
			expired[g.nudged] += e
			podTime[g.nudged] += total
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Token delivery into running pods (real kubelet, syncFrequency 1m; %s tokens from Keycloak, renewed at ~2/3 of their life;\n", nudgeTokenLifespan)
	fmt.Fprintf(&b, "window %s; delay = new token seen in the Secret (watch) -> that token or a newer one read in the pod; load averages %s):\n", t1.Sub(t0).Round(time.Second), strings.Join(load, "; "))
	fmt.Fprintf(&b, "  %-34s %9s %5s %5s %9s %9s %9s %9s  %s\n", "mode", "rotations", "pods", "n", "p50", "p90", "p99", "max", "time pods held an expired token")
	for _, nudged := range []bool{true, false} {
		mode, pods := "kubelet default (unlabelled pods)", defaultPods
		if nudged {
			mode, pods = "nudged (labelled pods)", nudgedResources*nudgedPodsEach
		}
		d := delaysOf(results[nudged], func(s sample) time.Duration { return s.delay })
		if len(d) == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %-34s %9d %5d %5d %9s %9s %9s %9s  %.1f%%\n", mode, rotations[nudged], pods, len(d),
			fmtDelay(percentile(d, 50)), fmtDelay(percentile(d, 90)), fmtDelay(percentile(d, 99)), fmtDelay(d[len(d)-1]),
			100*expired[nudged].Seconds()/podTime[nudged].Seconds())
	}
	var withNudge []sample
	for _, s := range results[true] {
		if !s.nudge.IsZero() {
			withNudge = append(withNudge, s)
		}
	}
	toPatch := delaysOf(withNudge, func(s sample) time.Duration { return s.nudge.Sub(s.write) })
	toFile := delaysOf(withNudge, func(s sample) time.Duration { return s.seen.Sub(s.nudge) })
	if len(toPatch) > 0 {
		fmt.Fprintf(&b, "  nudged, split: write -> pod patched (operator) p50 %s p99 %s; pod patched -> file read (kubelet) p50 %s p99 %s; %d of %d without a nudge seen\n",
			fmtDelay(percentile(toPatch, 50)), fmtDelay(percentile(toPatch, 99)), fmtDelay(percentile(toFile, 50)), fmtDelay(percentile(toFile, 99)),
			len(results[true])-len(withNudge), len(results[true]))
	}
	// The API cost: the pod patches (each changes the annotation, so the pod watch sees each one)
	// between each rotation and the next, per rotation per pod.
	fmt.Fprintf(&b, "  API cost: %d pod patches for %d rotations x %d pods = %.2f per rotation per pod; operator's %s over the run: %v; unlabelled pods patched: %d\n",
		patches[true], rotations[true], nudgedPodsEach, float64(patches[true])/float64(len(results[true])), metrics.NamePodNudges, nudgeOutcomes(t), rec.patchesOf(def.pods...))
	t.Log("\n" + b.String())

	for _, p := range problems {
		t.Error(p)
	}
	if n := rec.patchesOf(def.pods...); n != 0 {
		t.Errorf("%d patches of unlabelled pods", n)
	}
	// What the user sees: the nudged resources report their consumers and are safe; the 20 s
	// token whose pods are not nudged is at risk, and says so; both stay Ready.
	for _, g := range groups {
		wantRisk := "False/" + authv1alpha1.ReasonMarginSufficient
		if !g.nudged {
			wantRisk = "True/" + authv1alpha1.ReasonMarginBelowKubeletSync
		}
		err := waitFor(30*time.Second, 500*time.Millisecond, func() error {
			o := &authv1alpha1.MLflowAccessToken{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: nudgeNS, Name: g.resource}, o); err != nil {
				return err
			}
			if got := condOf(o, authv1alpha1.ConditionDeliveryAtRisk); got != wantRisk {
				return fmt.Errorf("%s: DeliveryAtRisk %s, want %s", g.resource, got, wantRisk)
			}
			if got := condOf(o, authv1alpha1.ConditionReady); got != "True/"+authv1alpha1.ReasonTokenValid {
				return fmt.Errorf("%s: Ready %s", g.resource, got)
			}
			cs := o.Status.Consumers
			if g.nudged && (cs == nil || cs.Pods != int32(len(g.pods)) || cs.Nudged != cs.Pods || cs.Failed != 0 || cs.NotUpdatable != 0) {
				return fmt.Errorf("%s: status.consumers %+v", g.resource, cs)
			}
			if !g.nudged && (cs == nil || cs.Pods != 0) {
				return fmt.Errorf("%s: status.consumers %+v, want 0 pods (its pods are not labelled)", g.resource, cs)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < def {
		t.Fatalf("%s=%q: want a duration of at least %s", name, v, def)
	}
	return d
}

func envCount(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 50 {
		t.Fatalf("%s=%q: want a number from 1 to 50", name, v)
	}
	return n
}

// startShortTokenKeycloak runs Keycloak with the test realm, its client's tokens living
// nudgeTokenLifespan, on loopback (only the operator in this process talks to it).
func startShortTokenKeycloak(ctx context.Context, t *testing.T) (*keycloak.Server, error) {
	if keycloak.HomeFromEnv() == "" {
		return nil, fmt.Errorf("KEYCLOAK_HOME is not set: run `hack/keycloak.sh install` and `export KEYCLOAK_HOME=$(hack/keycloak.sh home)` (make test does both)")
	}
	data, err := os.ReadFile(filepath.Join(repoRoot(), "test", "keycloak", "realm-mlflow.json"))
	if err != nil {
		return nil, err
	}
	var realm map[string]any
	if err := json.Unmarshal(data, &realm); err != nil {
		return nil, err
	}
	found := false
	for _, cl := range realm["clients"].([]any) {
		cm := cl.(map[string]any)
		if cm["clientId"] == "mlflow-operator" {
			cm["attributes"].(map[string]any)["access.token.lifespan"] = strconv.Itoa(int(nudgeTokenLifespan.Seconds()))
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("test/keycloak/realm-mlflow.json has no client mlflow-operator")
	}
	file := filepath.Join(t.TempDir(), "realm-mlflow-20s.json")
	data, _ = json.Marshal(realm)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return nil, err
	}
	start := time.Now()
	kc, err := keycloak.Start(ctx, keycloak.Options{RealmFiles: []string{file}, LogFile: filepath.Join(theNode.LogDir(), "keycloak.log")})
	if err == nil {
		t.Logf("Keycloak ready after %s", time.Since(start).Round(100*time.Millisecond))
	}
	return kc, err
}

// startNodeOperator runs the operator in this process against the node's API server, with its
// logs in the node's log directory.
func startNodeOperator(ctx context.Context) (func(), error) {
	f, err := os.Create(filepath.Join(theNode.LogDir(), "operator.log"))
	if err != nil {
		return nil, err
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(f), zap.UseDevMode(true), zap.Level(zapcore.Level(-1))))
	o := manager.Defaults()
	o.MetricsAddr, o.ProbeAddr = "0", "0"
	o.Reconciler.Guardrails.AllowInsecureHTTP = true // Keycloak on loopback
	o.Reconciler.KeycloakTimeout = 5 * time.Second
	o.Reconciler.Backoff = policy.Backoff{Initial: time.Second, Max: 3 * time.Second}
	if err := testenv.EnsureNamespace(ctx, theNode.RESTConfig(), testenv.OperatorNamespace); err != nil {
		f.Close()
		return nil, err
	}
	mgr, err := manager.New(theNode.RESTConfig(), o)
	if err != nil {
		f.Close()
		return nil, err
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(mctx); err != nil {
			fmt.Fprintf(f, "manager stopped: %v\n", err)
		}
	}()
	return func() { cancel(); <-done; f.Close() }, nil
}

func tokenResource(name, keycloakURL string) *authv1alpha1.MLflowAccessToken {
	return &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: nudgeNS},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			Keycloak: &authv1alpha1.KeycloakSpec{URL: keycloakURL, Realm: "mlflow", ClientID: "mlflow-operator",
				ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "mlflow-client", Key: "client-secret"}},
			Grant: authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		},
	}
}

// deleteTokenResources deletes the resources while the operator runs (it revokes their tokens and
// removes its finalizer).
func deleteTokenResources(t *testing.T, k8s client.Client) {
	ctx := context.Background()
	if err := k8s.DeleteAllOf(ctx, &authv1alpha1.MLflowAccessToken{}, client.InNamespace(nudgeNS)); err != nil {
		t.Errorf("deleting the MLflowAccessTokens: %v", err)
		return
	}
	if err := waitFor(time.Minute, 500*time.Millisecond, func() error {
		var l authv1alpha1.MLflowAccessTokenList
		if err := k8s.List(ctx, &l, client.InNamespace(nudgeNS)); err != nil {
			return err
		}
		if len(l.Items) > 0 {
			return fmt.Errorf("%d MLflowAccessTokens left", len(l.Items))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// deletePods removes the test's pods so that later tests run on a quieter node.
func deletePods(c kubernetes.Interface, groups ...[]string) {
	for _, g := range groups {
		for _, p := range g {
			_ = c.CoreV1().Pods(nudgeNS).Delete(context.Background(), p, metav1.DeleteOptions{})
		}
	}
}

func condOf(o *authv1alpha1.MLflowAccessToken, typ string) string {
	c := meta.FindStatusCondition(o.Status.Conditions, typ)
	if c == nil {
		return ""
	}
	return string(c.Status) + "/" + c.Reason
}

// nudgeOutcomes reads the operator's mlflow_token_pod_nudges_total from this process's registry.
func nudgeOutcomes(t *testing.T) map[string]float64 {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != metrics.NamePodNudges {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// deliveryRecorder watches the namespace's Secrets (each new token: when and which, by expiresAt)
// and pods (each nudge annotation: when, on which pod).
type deliveryRecorder struct {
	mu      sync.Mutex
	writes  map[string][]write     // Secret → new tokens in order
	nudges  map[string][]time.Time // pod → times its annotation changed
	lastAnn map[string]string      // pod → annotation value
	lastExp map[string]string      // Secret → expiresAt
}

type write struct {
	at        time.Time
	expiresAt string
}

func newDeliveryRecorder() *deliveryRecorder {
	return &deliveryRecorder{writes: map[string][]write{}, nudges: map[string][]time.Time{}, lastAnn: map[string]string{}, lastExp: map[string]string{}}
}

func (r *deliveryRecorder) watch(ctx context.Context, c kubernetes.Interface) error {
	sw, err := c.CoreV1().Secrets(nudgeNS).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	pw, err := c.CoreV1().Pods(nudgeNS).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		sw.Stop()
		return err
	}
	go func() {
		defer sw.Stop()
		for ev := range sw.ResultChan() {
			s, ok := ev.Object.(*corev1.Secret)
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
				continue
			}
			now := time.Now()
			exp := string(s.Data["expiresAt"])
			r.mu.Lock()
			if exp != "" && exp != r.lastExp[s.Name] {
				r.lastExp[s.Name] = exp
				r.writes[s.Name] = append(r.writes[s.Name], write{at: now, expiresAt: exp})
			}
			r.mu.Unlock()
		}
	}()
	go func() {
		defer pw.Stop()
		for ev := range pw.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type != watch.Modified {
				continue
			}
			now := time.Now()
			v := p.Annotations[authv1alpha1.AnnotationTokenRotatedAt]
			r.mu.Lock()
			if v != "" && v != r.lastAnn[p.Name] {
				r.lastAnn[p.Name] = v
				r.nudges[p.Name] = append(r.nudges[p.Name], now)
			}
			r.mu.Unlock()
		}
	}()
	return nil
}

// writesOf returns the new tokens of secret written in (from, to].
func (r *deliveryRecorder) writesOf(secret string, from, to time.Time) []write {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []write
	for _, w := range r.writes[secret] {
		if w.at.After(from) && !w.at.After(to) {
			out = append(out, w)
		}
	}
	return out
}

// nudgeOf is the first nudge of pod after at (zero when none).
func (r *deliveryRecorder) nudgeOf(pod string, at time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.nudges[pod] {
		if !n.Before(at) {
			return n
		}
	}
	return time.Time{}
}

// patchesIn counts the nudges of pods in [from, to).
func (r *deliveryRecorder) patchesIn(from, to time.Time, pods ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range pods {
		for _, at := range r.nudges[p] {
			if !at.Before(from) && at.Before(to) {
				n++
			}
		}
	}
	return n
}

func (r *deliveryRecorder) patchesOf(pods ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range pods {
		n += len(r.nudges[p])
	}
	return n
}

// seenLine is one "seen <unix ns> <content>" line of the probe.
type seenLine struct {
	at      time.Time
	content string
}

func seenLines(log string) []seenLine {
	var out []seenLine
	for _, line := range strings.Split(log, "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 || f[0] != "seen" {
			continue
		}
		content, err1 := strconv.Unquote(f[2])
		ns, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 == nil && err2 == nil {
			out = append(out, seenLine{at: time.Unix(0, ns), content: content})
		}
	}
	return out
}

// firstSeen is when the pod first read a token expiring at expiresAt or later (RFC 3339 in UTC
// compares as text); zero when it has not.
func firstSeen(lines []seenLine, expiresAt string) time.Time {
	for _, l := range lines {
		if l.content >= expiresAt {
			return l.at
		}
	}
	return time.Time{}
}

// expiredTime is how long within [from, to] the pod held a token past its expiry, and to-from.
func expiredTime(lines []seenLine, from, to time.Time) (expired, total time.Duration) {
	for i, l := range lines {
		end := to
		if i+1 < len(lines) && lines[i+1].at.Before(to) {
			end = lines[i+1].at
		}
		exp, err := time.Parse(time.RFC3339, l.content)
		if err != nil {
			continue
		}
		start := l.at
		if exp.After(start) {
			start = exp
		}
		if from.After(start) {
			start = from
		}
		if end.After(start) {
			expired += end.Sub(start)
		}
	}
	return expired, to.Sub(from)
}

// delaysOf returns f of the samples, sorted.
func delaysOf[S any](samples []S, f func(S) time.Duration) []time.Duration {
	d := make([]time.Duration, 0, len(samples))
	for _, s := range samples {
		d = append(d, f(s))
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d
}

func fmtStamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format("15:04:05.000")
}
