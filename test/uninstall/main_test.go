// Package uninstall tests `manager uninstall`, the Helm chart's pre-delete hook, against a real
// kube-apiserver (envtest), a real Keycloak and the operator running in this process, as the
// operator is running while Helm runs pre-delete hooks. The command runs with the identity the
// chart gives it: the hook's ServiceAccount, bound to the RBAC rendered from the chart by Helm,
// so the tests also prove those rules are enough. KUBEBUILDER_ASSETS, KEYCLOAK_HOME and
// bin/tools/helm are required: without them the tests fail, they do not skip.
package uninstall

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// Facts of realm-uninstall.json.
const (
	realm        = "uninstall"
	clientID     = "mlflow-uninstall"
	clientSecret = "mlflowUninstallTestSecret0004"
)

// The two installs whose hooks are rendered: one cluster-wide revoking, one namespaced orphaning.
const (
	hookNamespace = "op-system"
	revokeRelease = "mto"
	orphanRelease = "orph"
	orphanNSA     = "orphan-a"
	orphanNSB     = "orphan-b"
	chartRelPath  = "charts/mlflow-token-operator"
)

var (
	admin     client.Client
	adminCfg  *rest.Config
	kcServer  *keycloak.Server
	manager   string // the operator binary, built from ./cmd
	operator  = &inProcess{}
	testCtx   = context.Background()
	revokeCfg *rest.Config // the revoke hook's ServiceAccount
	orphanCfg *rest.Config // the orphan hook's ServiceAccount
	// orphanKubeconfig is orphanCfg as a file, for the binary.
	orphanKubeconfig string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true)))
	helm := filepath.Join(testenv.RepoRoot(), "bin", "tools", "helm")
	if _, err := os.Stat(helm); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %s is missing (%v): run the tests with `make test`, or build it with hack/packaging-tools.sh\n", helm, err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "uninstall-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	manager = filepath.Join(tmp, "manager")

	servers, err := testenv.Start(testCtx, testenv.Options{
		Keycloak: keycloak.Options{RealmFiles: []string{"realm-uninstall.json"}},
		Alongside: []func(context.Context) error{func(ctx context.Context) error {
			build := exec.CommandContext(ctx, "go", "build", "-o", manager, "./cmd")
			build.Dir = testenv.RepoRoot()
			if out, err := build.CombinedOutput(); err != nil {
				return fmt.Errorf("building ./cmd: %v\n%s", err, out)
			}
			return nil
		}},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer servers.Stop()
	kcServer, adminCfg = servers.Keycloak, servers.Config
	if admin, err = client.New(adminCfg, client.Options{Scheme: scheme.New()}); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}

	// The hooks' identities, from the chart.
	for _, ns := range []string{hookNamespace, orphanNSA, orphanNSB} {
		if err := admin.Create(testCtx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			return 1
		}
	}
	if revokeCfg, err = hookIdentity(helm, revokeRelease); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: the revoke hook's identity:", err)
		return 1
	}
	if orphanCfg, err = hookIdentity(helm, orphanRelease, "--set", "uninstall.revokeTokens=false",
		"--set", "watchNamespaces={"+orphanNSA+","+orphanNSB+"}"); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: the orphan hook's identity:", err)
		return 1
	}
	orphanKubeconfig = filepath.Join(tmp, "orphan.kubeconfig")
	if err := writeKubeconfig(orphanKubeconfig, orphanCfg); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}

	if err := operator.start(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: starting the operator:", err)
		return 1
	}
	code := m.Run()
	operator.stop()
	return code
}

// hookIdentity renders the chart's uninstall hook, creates its ServiceAccount, roles and
// bindings as they are (the Job aside), and returns a configuration authenticated as that
// ServiceAccount with a token from the TokenRequest API.
func hookIdentity(helm, release string, set ...string) (*rest.Config, error) {
	args := append([]string{"template", release, chartRelPath, "--namespace", hookNamespace,
		"--show-only", "templates/uninstall-hook.yaml"}, set...)
	cmd := exec.Command(helm, args...)
	cmd.Dir = testenv.RepoRoot()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %v: %v\n%s", args, err, stderr.String())
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	sa := ""
	for {
		var o unstructured.Unstructured
		if err := dec.Decode(&o.Object); err != nil {
			if err == io.EOF {
				break
			}
			return nil, err
		}
		switch o.GetKind() {
		case "":
			continue
		case "Job":
			continue
		case "ServiceAccount":
			sa = o.GetName()
		}
		if err := admin.Create(testCtx, &o); err != nil {
			return nil, fmt.Errorf("creating %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	if sa == "" {
		return nil, fmt.Errorf("the hook has no ServiceAccount:\n%s", out)
	}
	cs, err := kubernetes.NewForConfig(adminCfg)
	if err != nil {
		return nil, err
	}
	tr, err := cs.CoreV1().ServiceAccounts(hookNamespace).CreateToken(testCtx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("a token for %s: %w", sa, err)
	}
	cfg := rest.AnonymousClientConfig(adminCfg)
	cfg.BearerToken = tr.Status.Token
	return cfg, nil
}

func writeKubeconfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["hook"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["hook"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "hook"}
	kc.CurrentContext = "hook"
	return clientcmd.WriteToFile(*kc, path)
}

func ptr[T any](v T) *T { return &v }

// inProcess is the operator running in this process, stopped and started by the tests.
type inProcess struct {
	mu      sync.Mutex
	stopper func()
}

func (p *inProcess) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopper != nil {
		return nil
	}
	o := testenv.OperatorOptions()
	o.SkipNameValidation = true // the tests restart it
	stop, err := testenv.StartOperator(testCtx, adminCfg, o)
	if err != nil {
		return err
	}
	p.stopper = stop
	return nil
}

func (p *inProcess) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopper != nil {
		p.stopper()
		p.stopper = nil
	}
}

func notFound(err error) bool { return apierrors.IsNotFound(err) }
