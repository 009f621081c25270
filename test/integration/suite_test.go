// Package integration runs the operator against a real kube-apiserver (envtest: etcd and
// kube-apiserver built by hack/build-envtest.sh) and a real Keycloak (hack/keycloak.sh).
// Both are required: without them the tests fail, they do not skip.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/manager"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// Facts of the realm fixture test/keycloak/realm-mlflow.json.
const (
	realm           = "mlflow"
	clientID        = "mlflow-operator"
	clientSecret    = "mlflowOperatorTestSecret0001"
	tokenLifespan   = 12 * time.Second
	waitForRotation = 40 * time.Second
)

var (
	k8s     client.Client
	restCfg *rest.Config
	// restCfgAdmin is the API server's admin (restCfg becomes the operator's restricted identity).
	restCfgAdmin *rest.Config
	// testEnv is the envtest environment, for tests that add users.
	testEnv *envtest.Environment
	// kubeconfigPath points at the API server, for tools run as processes (the kubectl plugin).
	kubeconfigPath string
	kcServer       *keycloak.Server
	logs           = &syncBuffer{}
	// pki is the test CA and the certificate Keycloak's HTTPS port serves.
	pki testenv.PKI
	// metricsAddr is where the in-process operator serves /metrics.
	metricsAddr = freeAddr()
	testScheme  = scheme.New()
)

// syncBuffer collects the operator's log output for the leak test.
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

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// Set the logger first: controller-runtime replaces an unset logger with a silent one after
	// 30 s, and starting Keycloak can take longer than that. All verbosities are captured.
	ctrl.SetLogger(manager.SafeLogger(zap.New(zap.WriteTo(io.MultiWriter(logs, os.Stderr)), zap.UseDevMode(true), zap.Level(zapcore.Level(-10)))))
	if err := testenv.Preflight(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pkiDir, err := os.MkdirTemp("", "mlflow-token-pki-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	defer os.RemoveAll(pkiDir)
	if pki, err = testenv.NewPKI(pkiDir); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: generating the test CA: %v\n", err)
		return 1
	}

	// kubeconfigPath is for tools run as processes (the kubectl plugin).
	kubeconfigPath = filepath.Join(os.TempDir(), fmt.Sprintf("mlflow-token-it-%d.kubeconfig", os.Getpid()))
	defer os.Remove(kubeconfigPath)
	servers, err := testenv.Start(ctx, testenv.Options{
		Keycloak: keycloak.Options{
			RealmFiles:  []string{filepath.Join("..", "keycloak", "realm-mlflow.json"), filepath.Join("..", "keycloak", "realm-strict.json")},
			TLSCertFile: pki.CertFile,
			TLSKeyFile:  pki.KeyFile,
		},
		Kubeconfig: kubeconfigPath,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	defer servers.Stop()
	env, cfg := servers.Env, servers.Config
	kcServer = servers.Keycloak
	restCfg, restCfgAdmin, testEnv = cfg, cfg, env
	defer removePluginBinary()

	k8s, err = client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}

	// The operator runs as a user holding exactly the generated role (config/rbac/role.yaml):
	// every test then also proves the role is enough.
	opCfg, err := testenv.OperatorIdentity(ctx, env, cfg, "mlflow-token-operator")
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: setting up the operator's RBAC: %v\n", err)
		return 1
	}
	restCfg = opCfg
	if stopOperator, err = startOperator(ctx, restCfg); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting the operator: %v\n", err)
		return 1
	}
	code := m.Run()
	stopOperator()
	// After every test, parallel ones included, so that the scan sees all their logs.
	if err := scanForLeaks(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: secrets leaked:\n%v\n", err)
		return 1
	}
	return code
}

// startOperator runs the manager in-process, wired as cmd/main.go wires it, with short
// backoffs so that failures and recoveries happen within a test's patience. All log levels
// are captured.
func startOperator(ctx context.Context, cfg *rest.Config) (func(), error) {
	o := testenv.OperatorOptions()
	o.MetricsAddr = metricsAddr
	o.KeycloakObserver = kcCalls.observe
	o.SkipNameValidation = true // restartOperator runs a second manager in this process
	return testenv.StartOperator(ctx, cfg, o)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// stopOperator stops the running operator.
var stopOperator func()

// restartOperator stops the operator and starts a new one, as a process restart would: the new
// one starts with empty caches and nothing in memory.
func restartOperator(t *testing.T) {
	t.Helper()
	stopOperator()
	var err error
	if stopOperator, err = startOperator(context.Background(), restCfg); err != nil {
		t.Fatalf("restarting the operator: %v", err)
	}
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "it-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}
