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

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/scrape"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
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
	// metricSATokenRequests counts the operator's TokenRequests (POST
	// serviceaccounts/<name>/token) for the service-account tokens of secretless clients.
	metricSATokenRequests = "mlflow_token_serviceaccount_token_requests_total"
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
	// IssuerURL is the API server's service-account issuer, which the bench realm's Kubernetes
	// identity provider trusts (set up by setupSecretless).
	IssuerURL string
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
	build := func(context.Context) error {
		e.OpBin = filepath.Join(work, "manager")
		cmd := exec.Command("go", "build", "-o", e.OpBin, "./cmd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd: %v\n%s", err, out)
		}
		return nil
	}
	// The API server is also a service-account issuer that Keycloak trusts (its CA in Keycloak's
	// truststore, anonymous OIDC discovery), as test/federated runs it: the secretless phase's
	// clients authenticate with its tokens. The other phases do not use it; it costs nothing there.
	s, err := testenv.Start(ctx, testenv.Options{
		Keycloak: keycloak.Options{
			Home:       keycloak.HomeFromEnv(),
			RealmFiles: []string{filepath.Join(root, "test", "bench", "realm-bench.json")},
			LogFile:    filepath.Join(work, "keycloak.log"),
		},
		KeycloakTimeout:      5 * time.Minute,
		APIServerCertDir:     filepath.Join(work, "apiserver"), // removed with the work directory
		ServiceAccountIssuer: true,
		Alongside:            []func(context.Context) error{build},
	})
	if err != nil {
		os.RemoveAll(work)
		return nil, err
	}
	e.KC, e.API, e.IssuerURL = s.Keycloak, s.Env, s.IssuerURL
	cfg := rest.CopyConfig(s.Config)
	cfg.QPS, cfg.Burst = 1e6, 1e6
	e.Cfg = cfg
	e.Kubeconfig = filepath.Join(work, "kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, e.API.KubeConfig, 0o600); err != nil {
		return e, err
	}
	if e.C, err = client.New(cfg, client.Options{Scheme: scheme()}); err != nil {
		return e, err
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
	Defaults             bool     // pass no tuning flags at all
	Extra                []string // further flags, also with Defaults (e.g. --serviceaccount-token-lifetime)
}

func (f OperatorFlags) args() []string {
	if f.Defaults {
		return f.Extra
	}
	return append([]string{
		"--concurrency=" + strconv.Itoa(f.Concurrency),
		"--kube-api-qps=" + strconv.FormatFloat(f.KubeQPS, 'f', -1, 64),
		"--kube-api-burst=" + strconv.Itoa(f.KubeBurst),
		"--keycloak-qps=" + strconv.FormatFloat(f.KeycloakQPS, 'f', -1, 64),
		"--keycloak-burst=" + strconv.Itoa(f.KeycloakBurst),
		"--keycloak-qps-per-host=" + strconv.FormatFloat(f.KeycloakPerHostQPS, 'f', -1, 64),
		"--keycloak-burst-per-host=" + strconv.Itoa(f.KeycloakPerHostBurst),
	}, f.Extra...)
}

func (f OperatorFlags) String() string {
	if f.Defaults {
		return strings.Join(append([]string{"defaults (concurrency 4, kube-api 50/100, keycloak 100/100 global, 50/50 per host)"}, f.Extra...), " ")
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
		"--metrics-secure=false", // scraped over loopback by the harness
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
