// Package e2e is the end-to-end test with real parts only: a real kube-apiserver (envtest), a
// real Keycloak (test/keycloak, realm fixture realm-e2e.json), a real MLflow 3.x server with the
// mlflow-oidc-auth plugin from the Python package index (bin/venv-mlflow, built by
// hack/mlflow-venv.sh), the operator in-process, and Python "training jobs" using the MLflow
// client — one with the token-file plugin (clients/python), one configured the stock way.
//
// A Go stand-in for the kubelet (projection_test.go) mirrors the Secret into a directory with
// the kubelet's atomic-swap layout, with a configurable delay (E2E_PROJECTION_DELAY, default 2s).
//
// Required: KUBEBUILDER_ASSETS, KEYCLOAK_HOME and MLFLOW_VENV (all exported by `make test`).
// Without them the test fails; it does not skip.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/internal/freeport"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/mlflowserver"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// Facts of the realm fixture realm-e2e.json.
const (
	realm         = "mlflow"
	clientID      = "mlflow-operator"
	clientSecret  = "mlflowOperatorTestSecret0001"
	saUsername    = "service-account-mlflow-operator" // mlflow-oidc-auth username (preferred_username)
	tokenLifespan = 25 * time.Second
	audience      = "mlflow"
	usersGroup    = "mlflow_users"
	adminsGroup   = "mlflow_admins"
	// The MLflow server's own OIDC client and a human admin (group mlflow_admins).
	serverClientID     = "mlflow"
	serverClientSecret = "mlflowServerTestSecret0003"
	adminUser          = "mlflow-admin"
	adminPassword      = "mlflow-admin-password"
	adminEmail         = "mlflow-admin@example.com" // its mlflow-oidc-auth username (email claim)
)

// EnvVenv names the virtualenv built by hack/mlflow-venv.sh.
const EnvVenv = "MLFLOW_VENV"

var (
	k8s       client.Client
	kcServer  *keycloak.Server
	mlflowSrv *mlflowserver.Server
	venv      string
	repoRoot  string
	opLogs    = &syncBuffer{}
	versions  string
	startup   time.Duration
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", a...)
		return 1
	}
	if err := testenv.Preflight(); err != nil {
		return fail("%v", err)
	}
	venv = os.Getenv(EnvVenv)
	if venv == "" {
		return fail("%s is not set: run the tests with `make test` (hack/mlflow-venv.sh builds the MLflow virtualenv)", EnvVenv)
	}
	for _, bin := range []string{"python", "mlflow"} {
		if _, err := os.Stat(filepath.Join(venv, "bin", bin)); err != nil {
			return fail("%s=%s has no bin/%s: run hack/mlflow-venv.sh: %v", EnvVenv, venv, bin, err)
		}
	}
	var err error
	if repoRoot, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		return fail("%v", err)
	}
	out, err := exec.Command(filepath.Join(venv, "bin", "python"), "-c",
		`import importlib.metadata as m, platform; print(" ".join(p + " " + m.version(p) for p in ("mlflow", "mlflow-oidc-auth", "mlflow-token-file-auth")) + ", python " + platform.python_version())`).CombinedOutput()
	if err != nil {
		return fail("the venv %s is unusable: %v: %s", venv, err, out)
	}
	versions = strings.TrimSpace(string(out)) + ", keycloak " + strings.TrimPrefix(filepath.Base(keycloak.HomeFromEnv()), "keycloak-")

	// The operator's (and controller-runtime's) log goes to a buffer, quoted when a test fails.
	ctrl.SetLogger(zap.New(zap.WriteTo(opLogs), zap.UseDevMode(true)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	begin := time.Now()

	// The Keycloak port is chosen up front so that the MLflow server (issuer, discovery URL)
	// can start alongside it: mlflow-oidc-auth fetches the keys only at the first bearer request.
	kcPort, err := freeport.On("127.0.0.1")
	if err != nil {
		return fail("%v", err)
	}
	kcURL := "http://127.0.0.1:" + strconv.Itoa(kcPort)

	servers, err := testenv.Start(ctx, testenv.Options{
		Keycloak: keycloak.Options{Port: kcPort, RealmFiles: []string{"realm-e2e.json"}},
		Alongside: []func(context.Context) error{func(ctx context.Context) error {
			var err error
			if mlflowSrv, err = startMLflow(ctx, kcURL); err != nil {
				return fmt.Errorf("starting MLflow: %w", err)
			}
			fmt.Fprintf(os.Stderr, "MLflow (%s) ready at %s after %s\n", versions, mlflowSrv.URL, time.Since(begin).Round(time.Millisecond))
			return nil
		}},
	})
	if mlflowSrv != nil {
		defer mlflowSrv.Stop()
	}
	if err != nil {
		return fail("%v", err)
	}
	defer servers.Stop()
	kcServer = servers.Keycloak
	cfg := servers.Config
	startup = time.Since(begin)

	if k8s, err = client.New(cfg, client.Options{Scheme: scheme.New()}); err != nil {
		return fail("%v", err)
	}
	stop, err := startOperator(ctx, cfg)
	if err != nil {
		return fail("starting the operator: %v", err)
	}
	code := m.Run()
	stop()
	return code
}

// startOperator runs the operator in-process, built by internal/manager as cmd/main.go builds
// it, with no metrics or probe listeners and short backoffs.
func startOperator(ctx context.Context, cfg *rest.Config) (func(), error) {
	return testenv.StartOperator(ctx, cfg, testenv.OperatorOptions())
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// dumpOnFailure prints the end of the operator's, MLflow's and Keycloak's logs when t failed.
func dumpOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("--- operator log (tail) ---\n%s", tail(opLogs.String(), 60))
		if mlflowSrv != nil {
			b, _ := os.ReadFile(mlflowSrv.LogPath)
			t.Logf("--- MLflow server log %s (tail) ---\n%s", mlflowSrv.LogPath, tail(string(b), 80))
		}
		if kcServer != nil {
			b, _ := os.ReadFile(kcServer.LogPath())
			t.Logf("--- Keycloak log (tail) ---\n%s", tail(string(b), 30))
		}
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readAllLimit reads at most 1 MiB.
func readAllLimit(r io.Reader) []byte {
	b, _ := io.ReadAll(io.LimitReader(r, 1<<20))
	return b
}
