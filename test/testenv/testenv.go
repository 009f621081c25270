// Package testenv starts the real servers the test suites run against: a kube-apiserver and
// etcd (envtest; hack/build-envtest.sh builds them) serving the operator's CRDs, and Keycloak
// (hack/keycloak.sh installs it). Both take a while, so they start side by side, together with
// any other slow setup of a suite (building the operator, starting MLflow).
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/manager"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Preflight fails with a message that says what to run when a server's binaries are missing:
// a suite that needs them must fail loudly, never skip.
func Preflight() error {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return errors.New("KUBEBUILDER_ASSETS is not set: run the tests with `make test` (hack/build-envtest.sh builds etcd and kube-apiserver)")
	}
	if keycloak.HomeFromEnv() == "" {
		return errors.New("KEYCLOAK_HOME is not set: run the tests with `make test` (hack/keycloak.sh installs Keycloak)")
	}
	return nil
}

// Options say how to start the servers.
type Options struct {
	// Keycloak's options; Home defaults to $KEYCLOAK_HOME.
	Keycloak keycloak.Options
	// KeycloakTimeout bounds Keycloak's start (default 4 minutes: a loaded machine is slow).
	KeycloakTimeout time.Duration
	// APIServerCertDir fixes the API server's certificate directory (envtest makes a new CA at
	// each start of its own directory, which would void kubeconfigs across a restart).
	APIServerCertDir string
	// Kubeconfig, when set, is where the API server's admin kubeconfig is written.
	Kubeconfig string
	// Alongside are further slow setup steps, run while the servers start.
	Alongside []func(context.Context) error
}

// Servers are the running servers.
type Servers struct {
	Env      *envtest.Environment
	Config   *rest.Config
	Keycloak *keycloak.Server
}

// Start starts everything side by side and returns when all is up, or stops what did start and
// returns the first error. It prints how long each server took.
func Start(ctx context.Context, o Options) (*Servers, error) {
	if err := Preflight(); err != nil {
		return nil, err
	}
	if o.Keycloak.Home == "" {
		o.Keycloak.Home = keycloak.HomeFromEnv()
	}
	if o.KeycloakTimeout == 0 {
		o.KeycloakTimeout = 4 * time.Minute
	}
	begin := time.Now()
	s := &Servers{}
	var wg sync.WaitGroup
	errs := make([]error, 1+len(o.Alongside))
	wg.Add(1)
	go func() {
		defer wg.Done()
		kctx, cancel := context.WithTimeout(ctx, o.KeycloakTimeout)
		defer cancel()
		srv, err := keycloak.Start(kctx, o.Keycloak)
		if err != nil {
			errs[0] = fmt.Errorf("starting Keycloak: %w", err)
			return
		}
		s.Keycloak = srv
		fmt.Fprintf(os.Stderr, "Keycloak ready at %s after %s\n", srv.URL(), time.Since(begin).Round(time.Millisecond))
	}()
	for i, f := range o.Alongside {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i+1] = f(ctx)
		}()
	}

	s.Env = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	if o.APIServerCertDir != "" {
		if err := os.MkdirAll(o.APIServerCertDir, 0o700); err != nil {
			errs = append(errs, err)
		}
		s.Env.ControlPlane.GetAPIServer().CertDir = o.APIServerCertDir
	}
	cfg, err := s.Env.Start()
	if err != nil {
		s.Env = nil
		errs = append(errs, fmt.Errorf("starting the API server: %w", err))
	} else {
		s.Config = cfg
		fmt.Fprintf(os.Stderr, "API server ready after %s\n", time.Since(begin).Round(time.Millisecond))
		if o.Kubeconfig != "" {
			if err := os.WriteFile(o.Kubeconfig, s.Env.KubeConfig, 0o600); err != nil {
				errs = append(errs, err)
			}
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop stops the servers that run.
func (s *Servers) Stop() {
	if s.Keycloak != nil {
		s.Keycloak.Close()
	}
	if s.Env != nil {
		_ = s.Env.Stop()
	}
}

// OperatorOptions are the operator's options for tests: built as cmd/main.go builds it, with
// short timeouts and backoffs so that failures and recoveries happen within a test's patience,
// and no metrics or probe listeners.
func OperatorOptions() manager.Options {
	o := manager.Defaults()
	o.MetricsAddr, o.ProbeAddr = "0", "0"
	o.Reconciler.KeycloakTimeout = 5 * time.Second
	o.Reconciler.RevocationTimeout = 20 * time.Second
	o.Reconciler.Backoff = policy.Backoff{Initial: time.Second, Max: 3 * time.Second}
	return o
}

// StartOperator runs the operator in this process until the returned stop function is called.
func StartOperator(ctx context.Context, cfg *rest.Config, o manager.Options) (stop func(), err error) {
	mgr, err := manager.New(cfg, o)
	if err != nil {
		return nil, err
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(mctx); err != nil {
			fmt.Fprintf(os.Stderr, "manager stopped: %v\n", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
