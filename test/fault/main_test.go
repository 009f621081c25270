// Package fault runs the operator binary as a separate process against a real kube-apiserver
// (envtest) and a real Keycloak behind a fault-injecting proxy, and kills, restarts and starves
// it. See docs/reliability.md for the figures and how to reproduce them.
//
// Run: KUBEBUILDER_ASSETS=$PWD/bin/k8s KEYCLOAK_HOME=$PWD/bin/keycloak-26.7.3 go -C test test -count=1 -v ./fault/
// Long version (more resources, more kills, longer outages): FAULT_LONG=1 (make test-faults-long).
package fault

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// Facts of the realm fixtures test/keycloak/realm-mlflow.json and realm-strict.json.
const (
	realm         = "mlflow"
	strictRealm   = "strict"
	clientID      = "mlflow-operator"
	clientSecret  = "mlflowOperatorTestSecret0001"
	tokenLifespan = 12 * time.Second

	// Operator flags used by every test (the backoff bound of the outage test derives from them).
	minRetry        = time.Second
	maxRetry        = 5 * time.Second
	keycloakTimeout = 3 * time.Second
)

var (
	k8s            client.Client
	restCfg        *rest.Config
	env            *envtest.Environment
	kubeconfigPath string
	kcServer       *keycloak.Server
	proxy          *Proxy
	operatorBin    string
	workDir        string
	long           = os.Getenv("FAULT_LONG") != ""
)

// pick returns the short or the long value.
func pick[T any](short, longV T) T {
	if long {
		return longV
	}
	return short
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if err := testenv.Preflight(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	var err error
	if workDir, err = os.MkdirTemp("", "mlflow-token-fault-"); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	code := 1
	defer func() {
		if code == 0 && os.Getenv("FAULT_KEEP_LOGS") == "" {
			os.RemoveAll(workDir)
		} else {
			fmt.Fprintf(os.Stderr, "Operator and Keycloak logs kept in %s (FAULT_KEEP_LOGS keeps them after a pass too)\n", workDir)
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Keycloak, the API server and the operator binary side by side: all take a while.
	start := time.Now()
	operatorBin = filepath.Join(workDir, "manager")
	kubeconfigPath = filepath.Join(workDir, "kubeconfig")
	servers, err := testenv.Start(ctx, testenv.Options{
		Keycloak: keycloak.Options{
			RealmFiles: []string{filepath.Join("..", "keycloak", "realm-mlflow.json"), filepath.Join("..", "keycloak", "realm-strict.json")},
			LogFile:    filepath.Join(workDir, "keycloak.log"),
		},
		// A fixed certificate directory: envtest regenerates the serving CA on restart when the
		// directory is its own, which would make the kubeconfig the operator holds useless after
		// the API server restart test.
		APIServerCertDir: filepath.Join(workDir, "apiserver-certs"),
		Kubeconfig:       kubeconfigPath,
		Alongside: []func(context.Context) error{func(context.Context) error {
			build := exec.Command("go", "build", "-o", operatorBin, "./cmd")
			build.Dir = testenv.RepoRoot() // the operator's module, not the test module
			if out, err := build.CombinedOutput(); err != nil {
				return fmt.Errorf("building the operator: go build ./cmd: %v\n%s", err, out)
			}
			return nil
		}},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer servers.Stop()
	env, kcServer, restCfg = servers.Env, servers.Keycloak, servers.Config
	if k8s, err = client.New(restCfg, client.Options{Scheme: scheme.New()}); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	if proxy, err = NewProxy(kcServer.URL()); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: starting the proxy:", err)
		return 1
	}
	defer proxy.Close()
	fmt.Fprintf(os.Stderr, "Fault proxy at %s (long run: %v); setup took %s\n", proxy.URL(), long, time.Since(start).Round(time.Millisecond))

	code = m.Run()
	stopAllOperators()
	return code
}
