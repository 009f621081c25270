package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/scrape"
)

// Facts of the realm fixture realm-bench.json.
const (
	realm            = "bench"
	clientShort      = "bench-operator" // 30 s access tokens: the steady state
	clientShortSec   = "benchOperatorSecret0001"
	clientLong       = "bench-operator-5m" // 300 s access tokens: the fleet of the issue
	clientLongSecret = "benchOperatorSecret0002"
	inputSecret      = "bench-client"

	labelManagedBy   = "app.kubernetes.io/managed-by"
	managedByValue   = "mlflow-token-operator"
	annRenewAt       = "auth.mlflow-token-operator.io/renew-at"
	annIssuedAt      = "auth.mlflow-token-operator.io/issued-at"
	annSkipRevoke    = "auth.mlflow-token-operator.io/skip-revocation"
	metricKCRequests = "mlflow_token_keycloak_requests_total"
)

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(authv1alpha1.AddToScheme(s))
	return s
}

// Env is the API server, Keycloak and the operator binary.
type Env struct {
	Root       string
	Work       string
	KC         *keycloak.Server
	API        *envtest.Environment
	Cfg        *rest.Config // admin, unthrottled (the harness's own client)
	C          client.Client
	Kubeconfig string
	OpBin      string
}

func (e *Env) TokenURL() string {
	return e.KC.URL() + "/realms/" + realm + "/protocol/openid-connect/token"
}

func startEnv(ctx context.Context, root string) (*Env, error) {
	work, err := os.MkdirTemp("", "mlflow-token-bench-")
	if err != nil {
		return nil, err
	}
	e := &Env{Root: root, Work: work}
	// Keycloak's test package runs the JVM with C1 only (fast start, low throughput). A benchmark
	// wants the full JIT: an empty JAVA_OPTS_APPEND replaces that default.
	if _, ok := os.LookupEnv("JAVA_OPTS_APPEND"); !ok {
		os.Setenv("JAVA_OPTS_APPEND", "")
	}
	kcErr := make(chan error, 1)
	go func() {
		start := time.Now()
		kctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		var err error
		e.KC, err = keycloak.Start(kctx, keycloak.Options{
			Home:       keycloak.HomeFromEnv(),
			RealmFiles: []string{filepath.Join(root, "test", "bench", "realm-bench.json")},
			LogFile:    filepath.Join(work, "keycloak.log"),
		})
		if err == nil {
			logf("Keycloak ready at %s after %s", e.KC.URL(), time.Since(start).Round(time.Millisecond))
		}
		kcErr <- err
	}()
	buildErr := make(chan error, 1)
	go func() {
		e.OpBin = filepath.Join(work, "manager")
		cmd := exec.Command("go", "build", "-o", e.OpBin, "./cmd")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build ./cmd: %v\n%s", err, out)
		}
		buildErr <- err
	}()
	start := time.Now()
	e.API = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := e.API.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the API server: %w", err)
	}
	logf("API server ready after %s", time.Since(start).Round(time.Millisecond))
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 1e6, 1e6
	e.Cfg = cfg
	e.Kubeconfig = filepath.Join(work, "kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, e.API.KubeConfig, 0o600); err != nil {
		return nil, err
	}
	if e.C, err = client.New(cfg, client.Options{Scheme: scheme()}); err != nil {
		return nil, err
	}
	if err := <-buildErr; err != nil {
		return nil, err
	}
	if err := <-kcErr; err != nil {
		return nil, fmt.Errorf("starting Keycloak: %w", err)
	}
	return e, nil
}

func (e *Env) Close() {
	if e.KC != nil {
		e.KC.Close()
	}
	if e.API != nil {
		// envtest's Stop can wait long for watches to drain; do not hang the report on it.
		done := make(chan struct{})
		go func() { _ = e.API.Stop(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
		}
	}
	if keepWork {
		logf("kept %s (operator and Keycloak logs)", e.Work)
		return
	}
	os.RemoveAll(e.Work)
}

var keepWork bool

// namespace creates a namespace holding the input Secret with both clients' secrets, and (unless
// -inline) the two KeycloakIssuers the resources use: the platform-owned set-up, whose client
// secrets the operator watches instead of reading them at every rotation.
func (e *Env) namespace(ctx context.Context, name string) error {
	if err := e.C.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		return err
	}
	if err := e.C.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: inputSecret, Namespace: name},
		StringData: map[string]string{"client-secret": clientShortSec, "client-secret-5m": clientLongSecret},
	}); err != nil {
		return err
	}
	if inline {
		return nil
	}
	for _, i := range []struct{ name, client, key string }{{issuerShort, clientShort, "client-secret"}, {issuerLong, clientLong, "client-secret-5m"}} {
		if err := e.C.Create(ctx, &authv1alpha1.KeycloakIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: i.name, Namespace: name},
			Spec: authv1alpha1.KeycloakIssuerSpec{URL: e.KC.URL(), Realm: realm,
				ClientAuth: authv1alpha1.IssuerClientAuth{ClientID: i.client, ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: inputSecret, Key: i.key}}},
		}); err != nil {
			return err
		}
	}
	return nil
}

// waitIssuers waits until the namespace's issuers are Ready (the operator checked their realm).
func (e *Env) waitIssuers(ctx context.Context, ns string) error {
	if inline {
		return nil
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		ready := 0
		for _, name := range []string{issuerShort, issuerLong} {
			i := &authv1alpha1.KeycloakIssuer{}
			if err := e.C.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, i); err == nil && meta.IsStatusConditionTrue(i.Status.Conditions, authv1alpha1.ConditionReady) {
				ready++
			}
		}
		if ready == 2 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the issuers of %s were not Ready within a minute", ns)
}

// Issuers of the benchmark's namespaces; -inline makes the resources name Keycloak themselves.
const issuerShort, issuerLong = "bench-30s", "bench-5m"

var inline bool

// Operator is the operator binary running as a child process.
type Operator struct {
	Args        []string
	MetricsAddr string
	LogPath     string
	Started     time.Time
	cmd         *exec.Cmd
	done        chan struct{}
}

// OperatorFlags are the tunables a run passes to the operator.
type OperatorFlags struct {
	Concurrency          int
	KubeQPS              float64
	KubeBurst            int
	KeycloakQPS          float64 // <0: leave the operator's default
	KeycloakBurst        int
	KeycloakPerHostQPS   float64
	KeycloakPerHostBurst int
	Defaults             bool // pass no tuning flags at all
}

func (f OperatorFlags) args() []string {
	if f.Defaults {
		return nil
	}
	return []string{
		"--concurrency=" + strconv.Itoa(f.Concurrency),
		"--kube-api-qps=" + strconv.FormatFloat(f.KubeQPS, 'f', -1, 64),
		"--kube-api-burst=" + strconv.Itoa(f.KubeBurst),
		"--keycloak-qps=" + strconv.FormatFloat(f.KeycloakQPS, 'f', -1, 64),
		"--keycloak-burst=" + strconv.Itoa(f.KeycloakBurst),
		"--keycloak-qps-per-host=" + strconv.FormatFloat(f.KeycloakPerHostQPS, 'f', -1, 64),
		"--keycloak-burst-per-host=" + strconv.Itoa(f.KeycloakPerHostBurst),
	}
}

func (f OperatorFlags) String() string {
	if f.Defaults {
		return "defaults (concurrency 4, kube-api 50/100, keycloak 100/100 global, 50/50 per host)"
	}
	return strings.Join(f.args(), " ")
}

func (e *Env) startOperator(ctx context.Context, name, namespace string, f OperatorFlags) (*Operator, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	o := &Operator{MetricsAddr: addr, LogPath: filepath.Join(e.Work, "operator-"+name+".log"), done: make(chan struct{})}
	o.Args = append([]string{
		"--kubeconfig=" + e.Kubeconfig,
		"--allow-insecure-http", // the benchmark's Keycloak serves plain HTTP on 127.0.0.1
		"--metrics-bind-address=" + addr,
		"--health-probe-bind-address=0",
		"--namespaces=" + namespace,
	}, f.args()...)
	logFile, err := os.OpenFile(o.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	o.cmd = exec.Command(e.OpBin, o.Args...)
	o.cmd.Stdout, o.cmd.Stderr = logFile, logFile
	o.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	o.Started = time.Now()
	if err := o.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() { _ = o.cmd.Wait(); logFile.Close(); close(o.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := o.Metrics(); err == nil {
			return o, nil
		}
		select {
		case <-o.done:
			return nil, fmt.Errorf("operator exited at start; see %s", o.LogPath)
		case <-ctx.Done():
			o.Kill()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			o.Kill()
			return nil, fmt.Errorf("operator metrics did not answer within 30s")
		}
	}
}

func (o *Operator) Pid() int { return o.cmd.Process.Pid }

// Stop sends SIGTERM and waits (SIGKILL after 15 s).
func (o *Operator) Stop() {
	select {
	case <-o.done:
		return
	default:
	}
	_ = o.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-o.done:
	case <-time.After(15 * time.Second):
		o.Kill()
	}
}

func (o *Operator) Kill() {
	select {
	case <-o.done:
		return
	default:
	}
	_ = o.cmd.Process.Signal(syscall.SIGKILL)
	<-o.done
}

// RSS is the resident set size in bytes (/proc/<pid>/status VmRSS).
func (o *Operator) RSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", o.Pid()))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// CPU is user+system CPU seconds (/proc/<pid>/stat; USER_HZ is 100 on Linux).
func (o *Operator) CPU() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", o.Pid()))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	// Fields after the command: state(0) ... utime(11) stime(12).
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// Metrics scrapes the operator's /metrics.
func (o *Operator) Metrics() (Metrics, error) {
	return scrape.Get(o.MetricsAddr, 10*time.Second)
}

// Metrics maps a printed series to its value.
type Metrics = scrape.Metrics

// Counters the harness reads at the start and end of a phase.
type Counters struct {
	At         time.Time
	KC         float64 // Keycloak token-endpoint requests (all grants and outcomes)
	KCFailed   float64
	Writes     float64 // PUT+PATCH+POST
	Puts       float64
	Patches    float64
	Posts      float64
	Gets       float64
	CPU        float64 // from /proc
	HeapInUse  float64
	Reconciles float64
	Conflicts  float64 // API answers 409
	// Latency sums and counts (seconds): where a reconcile spends its time.
	KCDur, KCDurN          float64 // mlflow_token_keycloak_request_duration_seconds
	RecDur, RecDurN        float64 // controller_runtime_reconcile_time_seconds
	APIDur, APIDurN        float64 // rest_client_request_duration_seconds
	ThrottleDur, ThrottleN float64 // rest_client_rate_limiter_duration_seconds (client-side QPS limit)
	QueueDur, QueueN       float64 // workqueue_queue_duration_seconds
}

// Mean is sum/count as a duration.
func Mean(sum, n float64) time.Duration {
	if n == 0 {
		return 0
	}
	return time.Duration(sum / n * float64(time.Second))
}

func (o *Operator) Counters() (Counters, error) {
	m, err := o.Metrics()
	if err != nil {
		return Counters{}, err
	}
	c := Counters{At: time.Now(), CPU: o.CPU()}
	// Token requests only: the issuer controller's discovery requests (one per issuer at start,
	// then one per issuer every --issuer-recheck-interval) are not rotations' cost.
	c.KC = m.Sum(metricKCRequests, `endpoint="token"`)
	c.KCFailed = c.KC - m.Sum(metricKCRequests, `endpoint="token"`, `outcome="success"`)
	c.Puts = m.Sum("rest_client_requests_total", `method="PUT"`)
	c.Patches = m.Sum("rest_client_requests_total", `method="PATCH"`)
	c.Posts = m.Sum("rest_client_requests_total", `method="POST"`)
	c.Gets = m.Sum("rest_client_requests_total", `method="GET"`)
	c.Writes = c.Puts + c.Patches + c.Posts
	c.HeapInUse = m.Sum("go_memstats_heap_inuse_bytes")
	c.Reconciles = m.Sum("controller_runtime_reconcile_total")
	c.Conflicts = m.Sum("rest_client_requests_total", `code="409"`)
	c.KCDur, c.KCDurN = m.Sum("mlflow_token_keycloak_request_duration_seconds_sum"), m.Sum("mlflow_token_keycloak_request_duration_seconds_count")
	c.RecDur, c.RecDurN = m.Sum("controller_runtime_reconcile_time_seconds_sum"), m.Sum("controller_runtime_reconcile_time_seconds_count")
	c.APIDur, c.APIDurN = m.Sum("rest_client_request_duration_seconds_sum"), m.Sum("rest_client_request_duration_seconds_count")
	c.ThrottleDur, c.ThrottleN = m.Sum("rest_client_rate_limiter_duration_seconds_sum"), m.Sum("rest_client_rate_limiter_duration_seconds_count")
	c.QueueDur, c.QueueN = m.Sum("workqueue_queue_duration_seconds_sum"), m.Sum("workqueue_queue_duration_seconds_count")
	return c, nil
}

// Sub returns c − b.
func (c Counters) Sub(b Counters) Counters {
	return Counters{At: c.At, KC: c.KC - b.KC, KCFailed: c.KCFailed - b.KCFailed, Writes: c.Writes - b.Writes,
		Puts: c.Puts - b.Puts, Patches: c.Patches - b.Patches, Posts: c.Posts - b.Posts, Gets: c.Gets - b.Gets,
		CPU: c.CPU - b.CPU, HeapInUse: c.HeapInUse, Reconciles: c.Reconciles - b.Reconciles, Conflicts: c.Conflicts - b.Conflicts,
		KCDur: c.KCDur - b.KCDur, KCDurN: c.KCDurN - b.KCDurN, RecDur: c.RecDur - b.RecDur, RecDurN: c.RecDurN - b.RecDurN,
		APIDur: c.APIDur - b.APIDur, APIDurN: c.APIDurN - b.APIDurN, ThrottleDur: c.ThrottleDur - b.ThrottleDur, ThrottleN: c.ThrottleN - b.ThrottleN,
		QueueDur: c.QueueDur - b.QueueDur, QueueN: c.QueueN - b.QueueN}
}

// Latencies renders where the time went.
func (c Counters) Latencies() string {
	s := fmt.Sprintf("reconciles %.0f (mean %s), Keycloak call mean %s, workqueue wait mean %s",
		c.RecDurN, Mean(c.RecDur, c.RecDurN).Round(100*time.Microsecond), Mean(c.KCDur, c.KCDurN).Round(100*time.Microsecond),
		Mean(c.QueueDur, c.QueueN).Round(100*time.Microsecond))
	// controller-runtime does not export client-go's latency metrics; shown when present.
	if c.APIDurN > 0 {
		s += fmt.Sprintf(", API call mean %s", Mean(c.APIDur, c.APIDurN).Round(100*time.Microsecond))
	}
	if c.ThrottleN > 0 {
		s += fmt.Sprintf(", client-side throttling mean %s", Mean(c.ThrottleDur, c.ThrottleN).Round(100*time.Microsecond))
	}
	return s
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}
