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
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/manager"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/seal"
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
	// ServiceAccountIssuer makes the API server a service-account token issuer that Keycloak
	// trusts, for federated client authentication (a Keycloak client authenticating with a
	// Kubernetes service-account token): the API server serves https://127.0.0.1:PORT, which is
	// also its --service-account-issuer, with OIDC discovery and the JWKS readable anonymously,
	// and Keycloak's truststore holds the API server's CA. Servers.IssuerURL is the issuer.
	ServiceAccountIssuer bool
	// AuditLogPath, when set, makes the API server write an audit log (every request, at the
	// Metadata level: who did what to which object) to this file, in JSON lines.
	AuditLogPath string
	// NamespaceController runs kube-controller-manager's namespace controller and garbage
	// collector against the API server, so that a deleted namespace is emptied and goes, as in a
	// cluster (envtest alone leaves it Terminating forever).
	NamespaceController bool
}

// Servers are the running servers.
type Servers struct {
	Env      *envtest.Environment
	Config   *rest.Config
	Keycloak *keycloak.Server
	// IssuerURL is the API server's service-account issuer (the `iss` of its tokens) and
	// IssuerCAFile the PEM file of the CA that signs its serving certificate; both set with
	// Options.ServiceAccountIssuer only.
	IssuerURL, IssuerCAFile string

	issuer *issuer
	kcm    *namespaceController
	// kcmStopped: StopAPIServer stopped the namespace controller; StartAPIServer starts it again.
	kcmStopped bool
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
	s.Env = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	if o.AuditLogPath != "" {
		policy := o.AuditLogPath + ".policy.yaml"
		if err := os.WriteFile(policy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"), 0o600); err != nil {
			return nil, err
		}
		args := s.Env.ControlPlane.GetAPIServer().Configure()
		args.Set("audit-log-path", o.AuditLogPath)
		args.Set("audit-policy-file", policy)
		args.Set("audit-log-format", "json")
	}
	if o.APIServerCertDir != "" {
		if err := os.MkdirAll(o.APIServerCertDir, 0o700); err != nil {
			return nil, err
		}
		s.Env.ControlPlane.GetAPIServer().CertDir = o.APIServerCertDir
	}
	if o.ServiceAccountIssuer {
		// Before Keycloak starts: it reads its truststore once, at start.
		iss, err := prepareIssuer(s.Env.ControlPlane.GetAPIServer(), o.APIServerCertDir)
		if err != nil {
			return nil, fmt.Errorf("preparing the service-account issuer: %w", err)
		}
		s.issuer, s.IssuerURL, s.IssuerCAFile = iss, iss.url, iss.CAFile()
		o.Keycloak.TruststorePaths = append(o.Keycloak.TruststorePaths, iss.CAFile())
	}
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
		if s.issuer != nil {
			if err := s.issuer.allowAnonymousDiscovery(ctx, cfg); err != nil {
				errs = append(errs, err)
			}
		}
		// The operator's own namespace, where it keeps its state key (as a chart install has it).
		if err := EnsureNamespace(ctx, cfg, OperatorNamespace); err != nil {
			errs = append(errs, err)
		}
		if o.NamespaceController {
			if s.kcm, err = startNamespaceController(s.Env.KubeConfig); err != nil {
				errs = append(errs, fmt.Errorf("starting the namespace controller: %w", err))
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

// HasNamespaceController reports whether the namespace controller runs (Options.NamespaceController).
func (s *Servers) HasNamespaceController() bool { return s.kcm != nil || s.kcmStopped }

// Stop stops the servers that run.
func (s *Servers) Stop() {
	s.kcm.stop()
	if s.Keycloak != nil {
		s.Keycloak.Close()
	}
	if s.Env != nil {
		_ = s.Env.Stop()
	}
	if s.issuer != nil && s.issuer.tempDir {
		os.RemoveAll(s.issuer.dir)
	}
}

// RestartAPIServer stops the API server and starts it again on the same port with the same
// certificates and data (etcd keeps running). With Options.ServiceAccountIssuer it also waits
// until the issuer's discovery document and JWKS are served anonymously again.
func (s *Servers) RestartAPIServer() error {
	if err := s.StopAPIServer(); err != nil {
		return err
	}
	return s.StartAPIServer()
}

// StopAPIServer stops the API server (etcd keeps running). The namespace controller, if it
// runs, is stopped first: its watches would hold the API server's shutdown past envtest's stop
// timeout.
func (s *Servers) StopAPIServer() error {
	if s.kcm != nil {
		s.kcm.stop()
		s.kcm, s.kcmStopped = nil, true
	}
	if err := s.Env.ControlPlane.GetAPIServer().Stop(); err != nil {
		return fmt.Errorf("stopping the API server: %w", err)
	}
	return nil
}

// StartAPIServer starts a stopped API server again on the same port with the same certificates,
// and the namespace controller if StopAPIServer stopped it. With Options.ServiceAccountIssuer it
// waits until the issuer's discovery document and JWKS are served anonymously again.
func (s *Servers) StartAPIServer() error {
	if err := s.Env.ControlPlane.GetAPIServer().Start(); err != nil {
		return fmt.Errorf("starting the API server: %w", err)
	}
	if s.kcmStopped {
		kcm, err := startNamespaceController(s.Env.KubeConfig)
		if err != nil {
			return err
		}
		s.kcm, s.kcmStopped = kcm, false
	}
	if s.issuer != nil {
		return WaitForIssuerDiscovery(context.Background(), s.issuer.url, s.issuer.caPEM, 30*time.Second)
	}
	return nil
}

// RotateServiceAccountKey restarts the API server with a new service-account signing key
// (Options.ServiceAccountIssuer only). Tokens signed with the earlier keys stay valid at the API
// server; tokens issued from now on carry the new key's id. It returns the number of keys the
// JWKS now lists.
func (s *Servers) RotateServiceAccountKey() (int, error) {
	if s.issuer == nil {
		return 0, errors.New("RotateServiceAccountKey needs Options.ServiceAccountIssuer")
	}
	n, err := addServiceAccountSigningKey(s.issuer.dir)
	if err != nil {
		return 0, err
	}
	return n, s.RestartAPIServer()
}

// OperatorNamespace is the operator's own namespace in the test environments (where its state
// key lives): manager.OwnNamespace's default outside a pod.
const OperatorNamespace = "mlflow-token-operator-system"

// EnsureNamespace creates a namespace unless it exists.
func EnsureNamespace(ctx context.Context, cfg *rest.Config, name string) error {
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	err = c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// OperatorKeys are the keys the operator seals its Secrets with, for tests that play the
// operator's own writes (an interrupted redemption's marker).
func OperatorKeys(ctx context.Context, cfg *rest.Config) (*seal.Keys, error) {
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	return seal.Load(ctx, c, OperatorNamespace, manager.Defaults().StateKeySecret)
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
	// The test Keycloak serves plain HTTP on 127.0.0.1 (and HTTPS for the TLS tests); the
	// guardrail that refuses http:// has tests of its own (controllers' scenarios, test/federated).
	o.Reconciler.Guardrails.AllowInsecureHTTP = true
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

// ImageTag is the tag `make images` gives this checkout's images: v and the VERSION file.
func ImageTag() string {
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "VERSION"))
	if err != nil {
		panic("reading VERSION: " + err.Error())
	}
	return "v" + strings.TrimSpace(string(b))
}
