// Command neighbours measures what one tenant can do to the operator's service for the others
// (issue 17): a noisy neighbour (resources on a Keycloak host that accepts connections and never
// answers, and resources whose client Keycloak rejects) next to healthy tokens of another
// namespace; and a cache flood (thousands of large Secrets carrying the operator's label, and
// labelled Secrets whose owners do not exist). It runs the operator binary as a process against
// a real API server (envtest) and a real Keycloak, with the operator's default flags, so that an
// older binary can be measured by the same harness (-operator).
//
//	make bench-neighbours                            # this checkout's operator
//	make bench-neighbours ARGS="-operator OLD -label before"
//
// It prints a table per phase and, with -json, writes the figures.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/scrape"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// The bench realm's clients (test/bench/realm-bench.json).
const (
	realm        = "bench"
	client20s    = "bench-operator-20s"
	client20sSec = "benchOperatorSecret0003"
	annRenewAt   = "auth.mlflow-token-operator.io/renew-at"
	annSkip      = "auth.mlflow-token-operator.io/skip-revocation"
)

type config struct {
	operator, label, jsonOut, phases string
	duration                         time.Duration
	healthy, hanging, rejected       int
	flood, floodKiB, storm           int
}

// Result holds one run's figures.
type Result struct {
	Label, Operator string
	Noisy           *Noisy `json:",omitempty"`
	Flood           *Flood `json:",omitempty"`
}

// Noisy are the noisy-neighbour figures.
type Noisy struct {
	Healthy, Hanging, Rejected            int
	Duration                              string
	Polls, ExpiredPolls                   int
	Renewals                              int
	LatenessP50, LatenessP99, LatenessMax string
	RejectedAttempted, HangingAttempted   int
}

// Flood are the cache-flood figures.
type Flood struct {
	Secrets, KiB                         int
	HeapBefore, HeapAfter, HeapGrowthMiB float64
	RSSBeforeMiB, RSSAfterMiB            float64
	FloodReconciles                      float64
	Orphans                              int
	OrphanReconciles, OrphanCPUSeconds   float64
}

func main() {
	var c config
	flag.StringVar(&c.operator, "operator", "", "the operator binary (default: go build ./cmd of this checkout)")
	flag.StringVar(&c.label, "label", "after", "name of this run in the output")
	flag.StringVar(&c.jsonOut, "json", "", "write the figures as JSON to this file")
	flag.StringVar(&c.phases, "phases", "noisy,flood", "phases to run")
	flag.DurationVar(&c.duration, "duration", 3*time.Minute, "how long the noisy neighbours are measured")
	flag.IntVar(&c.healthy, "healthy", 30, "healthy resources (20 s tokens) in their own namespace")
	flag.IntVar(&c.hanging, "hanging", 200, "resources on a host that accepts connections and never answers")
	flag.IntVar(&c.rejected, "rejected", 1000, "resources whose client Keycloak rejects")
	flag.IntVar(&c.flood, "flood", 5000, "Secrets with the operator's label a tenant creates")
	flag.IntVar(&c.floodKiB, "flood-kib", 100, "size of each flood Secret")
	flag.IntVar(&c.storm, "orphans", 200, "labelled Secrets whose owner references point at resources that do not exist")
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	ctx := context.Background()
	res, err := run(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(c.jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			os.Exit(1)
		}
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

type env struct {
	c          client.Client
	kubeconfig string
	kcURL      string
	work       string
	bin        string
	secureFlag bool
}

func run(ctx context.Context, c config) (*Result, error) {
	if err := testenv.Preflight(); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "mlflow-token-neighbours-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	e := &env{work: work, bin: c.operator}
	var build []func(context.Context) error
	if e.bin == "" {
		e.bin = filepath.Join(work, "manager")
		build = append(build, func(context.Context) error {
			cmd := exec.Command("go", "build", "-o", e.bin, "./cmd")
			cmd.Dir = testenv.RepoRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build ./cmd: %v\n%s", err, out)
			}
			return nil
		})
	}
	os.Setenv("JAVA_OPTS_APPEND", "") // the full JIT, as the benchmark runs Keycloak
	s, err := testenv.Start(ctx, testenv.Options{
		Keycloak:  keycloak.Options{RealmFiles: []string{filepath.Join(testenv.RepoRoot(), "test", "bench", "realm-bench.json")}, LogFile: filepath.Join(work, "keycloak.log")},
		Alongside: build,
	})
	if err != nil {
		return nil, err
	}
	defer s.Stop()
	e.kcURL = s.Keycloak.URL()
	e.kubeconfig = filepath.Join(work, "kubeconfig")
	if err := os.WriteFile(e.kubeconfig, s.Env.KubeConfig, 0o600); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(s.Config)
	cfg.QPS, cfg.Burst = 1e6, 1e6
	if e.c, err = client.New(cfg, client.Options{Scheme: scheme.New()}); err != nil {
		return nil, err
	}
	help, _ := exec.Command(e.bin, "-h").CombinedOutput()
	e.secureFlag = strings.Contains(string(help), "metrics-secure")
	res := &Result{Label: c.label, Operator: e.bin}
	// The flood first: on an empty cluster, so that its heap and reconcile figures are the flood's
	// alone (the noisy phase leaves 1,200 failing resources behind).
	if strings.Contains(c.phases, "flood") {
		if res.Flood, err = e.floodPhase(ctx, c); err != nil {
			return res, err
		}
		printFlood(c.label, res.Flood)
	}
	if strings.Contains(c.phases, "noisy") {
		if res.Noisy, err = e.noisy(ctx, c); err != nil {
			return res, err
		}
		printNoisy(c.label, res.Noisy)
	}
	return res, nil
}

// operator is one operator process, with default flags.
type operator struct {
	cmd     *exec.Cmd
	metrics string
	done    chan struct{}
}

func (e *env) start(name string) (*operator, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"--kubeconfig=" + e.kubeconfig, "--allow-insecure-http", "--health-probe-bind-address=0", "--metrics-bind-address=" + addr}
	if e.secureFlag {
		args = append(args, "--metrics-secure=false")
	}
	logFile, err := os.Create(filepath.Join(e.work, "operator-"+name+".log"))
	if err != nil {
		return nil, err
	}
	o := &operator{cmd: exec.Command(e.bin, args...), metrics: addr, done: make(chan struct{})}
	o.cmd.Stdout, o.cmd.Stderr = logFile, logFile
	o.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := o.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = o.cmd.Wait(); close(o.done) }()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, err := scrape.Get(addr, time.Second); err == nil {
			return o, nil
		}
	}
	o.stop()
	return nil, errors.New("the operator's metrics endpoint did not come up")
}

func (o *operator) stop() {
	_ = o.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-o.done:
	case <-time.After(20 * time.Second):
		_ = o.cmd.Process.Kill()
		<-o.done
	}
}

func (o *operator) scrape() scrape.Metrics {
	m, err := scrape.Get(o.metrics, 10*time.Second)
	if err != nil {
		return scrape.Metrics{}
	}
	return m
}

// cpu is the process's user+system CPU seconds.
func (o *operator) cpu() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", o.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ut, st float64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return (ut + st) / 100
}

func (e *env) namespace(ctx context.Context, name, secret string) error {
	if err := e.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		return err
	}
	return e.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "client"}, StringData: map[string]string{"client-secret": secret}})
}

func token(ns, name, url, clientID string) *authv1alpha1.MLflowAccessToken {
	return &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{annSkip: "true"}},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			Keycloak: &authv1alpha1.KeycloakSpec{URL: url, Realm: realm, ClientID: clientID, ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "client"}},
			Grant:    authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		}}
}

func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil && errs[w] == nil {
					errs[w] = err
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// hangingHost accepts connections and never answers.
func hangingHost() (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return "http://" + l.Addr().String(), func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}, nil
}

func (e *env) noisy(ctx context.Context, c config) (*Noisy, error) {
	op, err := e.start("noisy")
	if err != nil {
		return nil, err
	}
	defer op.stop()
	hang, closeHang, err := hangingHost()
	if err != nil {
		return nil, err
	}
	defer closeHang()
	for _, ns := range []struct{ name, secret string }{{"healthy", client20sSec}, {"hanging", "x"}, {"rejected", "wrong-secret"}} {
		if err := e.namespace(ctx, ns.name, ns.secret); err != nil {
			return nil, err
		}
	}
	logf("%d healthy resources (20 s tokens)", c.healthy)
	if err := parallel(c.healthy, 8, func(i int) error {
		return e.c.Create(ctx, token("healthy", fmt.Sprintf("t-%03d", i), e.kcURL, client20s))
	}); err != nil {
		return nil, err
	}
	if err := e.waitTokens(ctx, "healthy", c.healthy, time.Minute); err != nil {
		return nil, err
	}
	w := e.watchHealthy(ctx, c.healthy)
	logf("the neighbours arrive: %d resources on a host that never answers, %d with a rejected client; measuring for %s", c.hanging, c.rejected, c.duration)
	if err := parallel(c.hanging, 8, func(i int) error {
		return e.c.Create(ctx, token("hanging", fmt.Sprintf("h-%04d", i), hang, client20s))
	}); err != nil {
		return nil, err
	}
	if err := parallel(c.rejected, 8, func(i int) error {
		return e.c.Create(ctx, token("rejected", fmt.Sprintf("r-%04d", i), e.kcURL, client20s))
	}); err != nil {
		return nil, err
	}
	time.Sleep(c.duration)
	w.stop()
	n := &Noisy{Healthy: c.healthy, Hanging: c.hanging, Rejected: c.rejected, Duration: c.duration.String(),
		Polls: w.polls, ExpiredPolls: w.expired, Renewals: len(w.lateness)}
	slices.Sort(w.lateness)
	n.LatenessP50, n.LatenessP99, n.LatenessMax = pct(w.lateness, 0.5), pct(w.lateness, 0.99), pct(w.lateness, 1)
	n.RejectedAttempted = e.attempted(ctx, "rejected")
	n.HangingAttempted = e.attempted(ctx, "hanging")
	return n, nil
}

func pct(sorted []time.Duration, p float64) string {
	if len(sorted) == 0 {
		return "-"
	}
	i := int(p*float64(len(sorted))) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i].Round(10 * time.Millisecond).String()
}

// waitTokens waits until n Secrets of ns hold a token.
func (e *env) waitTokens(ctx context.Context, ns string, n int, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		var l corev1.SecretList
		if err := e.c.List(ctx, &l, client.InNamespace(ns)); err != nil {
			return err
		}
		have := 0
		for _, s := range l.Items {
			if len(s.Data["token"]) > 0 {
				have++
			}
		}
		if have >= n {
			return nil
		}
	}
	return fmt.Errorf("the resources of %s did not all get a token within %s", ns, timeout)
}

// attempted counts the resources of ns that recorded at least one failed attempt.
func (e *env) attempted(ctx context.Context, ns string) int {
	var l authv1alpha1.MLflowAccessTokenList
	if err := e.c.List(ctx, &l, client.InNamespace(ns)); err != nil {
		return -1
	}
	n := 0
	for _, o := range l.Items {
		if o.Status.FailedAttempts > 0 || o.Status.LastFailureTime != nil {
			n++
		}
	}
	return n
}

// healthyWatch polls the healthy Secrets as a consumer would: polls that found an expired token,
// and for each rotation how late the new token appeared after the renewal time the operator had
// written with the previous one.
type healthyWatch struct {
	polls, expired int
	lateness       []time.Duration
	quit, done     chan struct{}
}

func (e *env) watchHealthy(ctx context.Context, n int) *healthyWatch {
	w := &healthyWatch{quit: make(chan struct{}), done: make(chan struct{})}
	type seen struct {
		token   string
		renewAt time.Time
	}
	last := map[string]seen{}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-tick.C:
			}
			now := time.Now()
			for i := range n {
				name := fmt.Sprintf("t-%03d", i)
				s := &corev1.Secret{}
				if err := e.c.Get(ctx, types.NamespacedName{Namespace: "healthy", Name: name}, s); err != nil {
					continue
				}
				tok := string(s.Data["token"])
				w.polls++
				if c, err := jwtclaims.Parse(tok); err != nil || !now.Before(c.ExpiresAt) {
					w.expired++
				}
				renewAt, _ := time.Parse(time.RFC3339, s.Annotations[annRenewAt])
				if prev, ok := last[name]; ok && prev.token != tok && !prev.renewAt.IsZero() {
					w.lateness = append(w.lateness, max(0, now.Sub(prev.renewAt)))
				}
				last[name] = seen{tok, renewAt}
			}
		}
	}()
	return w
}

func (w *healthyWatch) stop() {
	close(w.quit)
	<-w.done
}

func (e *env) floodPhase(ctx context.Context, c config) (*Flood, error) {
	if err := e.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flood"}}); err != nil {
		return nil, err
	}
	op, err := e.start("flood")
	if err != nil {
		return nil, err
	}
	defer op.stop()
	f := &Flood{Secrets: c.flood, KiB: c.floodKiB, Orphans: c.storm}
	time.Sleep(10 * time.Second)
	f.HeapBefore, f.RSSBeforeMiB = settledHeap(op)
	r0 := op.scrape().Sum("controller_runtime_reconcile_total", `controller="mlflowaccesstoken"`)
	logf("a tenant creates %d Secrets of %d KiB with the operator's label", c.flood, c.floodKiB)
	pad := []byte(strings.Repeat("x", c.floodKiB<<10))
	if err := parallel(c.flood, 16, func(i int) error {
		return e.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "flood", Name: fmt.Sprintf("flood-%05d", i),
			Labels: map[string]string{"app.kubernetes.io/managed-by": "mlflow-token-operator"}}, Data: map[string][]byte{"padding": pad}})
	}); err != nil {
		return nil, err
	}
	time.Sleep(30 * time.Second)
	f.HeapAfter, f.RSSAfterMiB = settledHeap(op)
	f.HeapGrowthMiB = (f.HeapAfter - f.HeapBefore)
	f.FloodReconciles = op.scrape().Sum("controller_runtime_reconcile_total", `controller="mlflowaccesstoken"`) - r0

	logf("a tenant creates %d labelled Secrets owned by resources that do not exist", c.storm)
	r1, cpu1 := op.scrape().Sum("controller_runtime_reconcile_total", `controller="mlflowaccesstoken"`), op.cpu()
	yes := true
	if err := parallel(c.storm, 16, func(i int) error {
		return e.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "flood", Name: fmt.Sprintf("orphan-%04d", i),
			Labels: map[string]string{"app.kubernetes.io/managed-by": "mlflow-token-operator"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: authv1alpha1.GroupVersion.String(), Kind: "MLflowAccessToken",
				Name: fmt.Sprintf("ghost-%04d", i), UID: types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i)), Controller: &yes}}},
			Data: map[string][]byte{"padding": []byte("x")}})
	}); err != nil {
		return nil, err
	}
	time.Sleep(16 * time.Second)
	f.OrphanReconciles = op.scrape().Sum("controller_runtime_reconcile_total", `controller="mlflowaccesstoken"`) - r1
	f.OrphanCPUSeconds = op.cpu() - cpu1
	return f, nil
}

// settledHeap is the operator's heap in use (MiB), the least of three samples a second apart
// (after the garbage collector ran), and its RSS (MiB).
func settledHeap(op *operator) (heap, rss float64) {
	heap = -1
	for range 3 {
		m := op.scrape()
		if h := m.Sum("go_memstats_heap_inuse_bytes") / (1 << 20); heap < 0 || h < heap {
			heap = h
		}
		rss = m.Sum("process_resident_memory_bytes") / (1 << 20)
		time.Sleep(time.Second)
	}
	return heap, rss
}

func printNoisy(label string, n *Noisy) {
	fmt.Printf("\n[%s] noisy neighbours: %d healthy 20 s tokens next to %d resources on a silent host and %d with a rejected client, %s\n", label, n.Healthy, n.Hanging, n.Rejected, n.Duration)
	fmt.Printf("  polls of the healthy Secrets that found an expired token: %d of %d\n", n.ExpiredPolls, n.Polls)
	fmt.Printf("  renewal lateness over %d renewals: p50 %s, p99 %s, max %s\n", n.Renewals, n.LatenessP50, n.LatenessP99, n.LatenessMax)
	fmt.Printf("  attempted at least once: %d of %d rejected, %d of %d on the silent host\n", n.RejectedAttempted, n.Rejected, n.HangingAttempted, n.Hanging)
}

func printFlood(label string, f *Flood) {
	fmt.Printf("\n[%s] cache flood: %d Secrets of %d KiB with the operator's label\n", label, f.Secrets, f.KiB)
	fmt.Printf("  heap in use %.1f → %.1f MiB (%+.1f MiB); RSS %.1f → %.1f MiB; reconciles caused: %.0f\n", f.HeapBefore, f.HeapAfter, f.HeapGrowthMiB, f.RSSBeforeMiB, f.RSSAfterMiB, f.FloodReconciles)
	fmt.Printf("  %d labelled Secrets owned by resources that do not exist: %.0f reconciles, %.1f CPU seconds in 16 s\n", f.Orphans, f.OrphanReconciles, f.OrphanCPUSeconds)
}
