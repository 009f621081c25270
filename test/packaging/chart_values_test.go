package packaging

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// badValues are values the schema must reject, each with what Helm's message must name.
var badValues = []struct{ set, want string }{
	{"replicas=two", "at '/replicas': got string, want integer"},
	{"logging.level=verbose", "at '/logging/level'"},
	{"logging.level=0", "at '/logging/level'"},
	{"logging.encoder=text", "at '/logging/encoder'"},
	{"imag.tag=v1", "additional properties 'imag' not allowed"},
	{"metrics.serviceMonitor.enable=true", "additional properties 'enable' not allowed"},
	{"image.pullPolicy=Sometimes", "at '/image/pullPolicy'"},
	{"image.digest=sha256:abc", "at '/image/digest'"},
	{"uninstall.timeout=4", "at '/uninstall/timeout': got number, want string"},
	{"uninstall.timeout=soon", "at '/uninstall/timeout'"},
	{"crds.keep=yes", "at '/crds/keep': got string, want boolean"},
	{"metrics.port=0", "at '/metrics/port'"},
	{"metrics.serviceMonitor.interval=30 seconds", "at '/metrics/serviceMonitor/interval'"},
	{"podDisruptionBudget.maxUnavailable=-1", "at '/podDisruptionBudget/maxUnavailable'"},
	{"watchNamespaces={Team_A}", "at '/watchNamespaces/0'"},
	{"extraArgs={concurrency=8}", "at '/extraArgs/0'"},
	{"extraEnv[0].value=x", "at '/extraEnv/0': missing property 'name'"},
}

// TestChartSchemaRejectsBadValues: wrong types, unknown enum values and misspelt keys fail
// `helm template` with a message that names the value; good non-default values pass.
func TestChartSchemaRejectsBadValues(t *testing.T) {
	for _, c := range badValues {
		_, err := helmTemplateErr(t, "x", "schema", "", "--set", c.set)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--set %s: got %v, want an error containing %q", c.set, err, c.want)
		}
	}
	for _, good := range []string{"logging.level=2", "logging.level=DEBUG", "podDisruptionBudget.maxUnavailable=50%",
		"podDisruptionBudget.minAvailable=1", "image.tag=20260101", "uninstall.timeout=1m30s", "metrics.serviceMonitor.scrapeTimeout=10s",
		"image.digest=sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"} {
		if _, err := helmTemplateErr(t, "x", "schema", "", "--set", good); err != nil {
			t.Errorf("--set %s is rejected: %v", good, err)
		}
	}
}

// TestChartLogFlagsMatchTheOperator: the schema accepts exactly the log settings the operator's
// zap flags accept (the operator, not a copy of its rules, is asked), so that a value that passes
// `helm install` never crash-loops the pod and a valid one is never refused. One deliberate
// difference: verbosities above 128, which the flag accepts but wraps around to nonsense, are
// refused.
func TestChartLogFlagsMatchTheOperator(t *testing.T) {
	bin := managerBinary(t)
	kubeconfig := filepath.Join(t.TempDir(), "missing")
	operatorAccepts := func(flagName, v string) bool {
		// A valid flag gets past parsing and fails later for want of a kubeconfig; an invalid one
		// fails parsing.
		out, _ := exec.Command(bin, "--"+flagName+"="+v, "--kubeconfig="+kubeconfig).CombinedOutput()
		return !strings.Contains(string(out), "invalid value")
	}
	cases := map[string][]string{
		"level":           {"debug", "info", "error", "panic", "DEBUG", "Info", "warn", "warning", "verbose", "trace", "1", "2", "10", "127", "128", "+3", "007", "0", "-1", "1.5", "", " 2"},
		"encoder":         {"json", "JSON", "console", "Console", "text", "logfmt", ""},
		"stacktraceLevel": {"info", "error", "panic", "ERROR", "debug", "warn", ""},
	}
	flagOf := map[string]string{"level": "zap-log-level", "encoder": "zap-encoder", "stacktraceLevel": "zap-stacktrace-level"}
	for value, candidates := range cases {
		for _, v := range candidates {
			_, err := helmTemplateErr(t, "x", "schema", "", "--set-string", "logging."+value+"="+v)
			chartAccepts := err == nil
			if err != nil && !strings.Contains(err.Error(), "/logging/"+value) {
				t.Fatalf("logging.%s=%q: unexpected error %v", value, v, err)
			}
			if want := operatorAccepts(flagOf[value], v); chartAccepts != want {
				t.Errorf("logging.%s=%q: the chart accepts it: %v, the operator's --%s accepts it: %v", value, v, chartAccepts, flagOf[value], want)
			}
		}
	}
	// Integers, as `--set logging.level=5` or `level: 5` give them.
	for _, v := range []string{"5", "128"} {
		if _, err := helmTemplateErr(t, "x", "schema", "", "--set", "logging.level="+v); err != nil {
			t.Errorf("--set logging.level=%s (an integer) is rejected: %v", v, err)
		}
	}
	if _, err := helmTemplateErr(t, "x", "schema", "", "--set", "logging.level=129"); err == nil {
		t.Error("logging.level=129 passes: above 128 the operator's verbosity wraps around")
	}
}

// TestChartInstallUpgradeUninstall drives Helm itself against a real API server: install (the
// NOTES say the right commands and point at nothing outside the chart), upgrades that the schema
// refuses, an upgrade that adds a PodDisruptionBudget, uninstall that keeps the CRD (crds.keep)
// or removes it (crds.keep=false), and the adoption of a CRD that Helm did not create, as the
// chart's README describes it. Hooks are skipped: envtest runs no Job controller, so the
// uninstall Job would never finish (test/uninstall runs its command for real).
func TestChartInstallUpgradeUninstall(t *testing.T) {
	c := apiServer(t)
	ctx := context.Background()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	const ns, crdName = "helm-real", "mlflowaccesstokens.auth.mlflow-token-operator.io"
	helm := func(args ...string) (string, error) {
		out, err := runErr(t, tool(t, "helm"), append(args, "--kubeconfig", kubeconfig, "--namespace", ns)...)
		return string(out), err
	}
	mustHelm := func(args ...string) string {
		t.Helper()
		out, err := helm(args...)
		if err != nil {
			t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	crd := func(name string) *apiextensionsv1.CustomResourceDefinition {
		o := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(ctx, types.NamespacedName{Name: name}, o); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			t.Fatal(err)
		}
		return o
	}
	allCRDs := generatedCRDs(t)
	waitCRDsGone := func() {
		t.Helper()
		// The API server's CRD finalizer deletes the instances first and retries with its own
		// backoff; on a loaded machine that took over a minute once. The conditions say why.
		deadline := time.Now().Add(3 * time.Minute)
		for name := range allCRDs {
			for o := crd(name); o != nil; o = crd(name) {
				if time.Now().After(deadline) {
					t.Fatalf("CRD %s is still there 3 minutes after its deletion; finalizers %v, conditions %+v", name, o.Finalizers, o.Status.Conditions)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	// waitServed waits until the API server lists every CRD's resources. A CRD deleted while the
	// API server still initializes its storage can stay Terminating for minutes ("could not list
	// instances: storage is (re)initializing", seen once in CI when the whole install-uninstall
	// cycle took 2 s); no user uninstalls within seconds of installing.
	waitServed := func() {
		t.Helper()
		for name, u := range allCRDs {
			group, _, _ := unstructured.NestedString(u.Object, "spec", "group")
			kind, _, _ := unstructured.NestedString(u.Object, "spec", "names", "kind")
			versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
			version, _, _ := unstructured.NestedString(versions[0].(map[string]any), "name")
			l := &unstructured.UnstructuredList{}
			l.SetGroupVersionKind(schema.GroupVersionKind{Group: group, Version: version, Kind: kind + "List"})
			testenv.Eventually(t, time.Minute, "the API server to list the resources of "+name, func() (bool, string) {
				err := c.List(ctx, l)
				return err == nil, fmt.Sprint(err)
			})
		}
	}
	t.Cleanup(func() {
		// Other tests dry-run the CRDs' creation: leave none behind.
		for name := range allCRDs {
			if o := crd(name); o != nil {
				_ = c.Delete(ctx, o)
			}
		}
		waitCRDsGone()
	})
	for name := range allCRDs {
		if crd(name) != nil {
			t.Fatalf("CRD %s exists before the test", name)
		}
	}

	if _, err := helm("install", "mto", chartDir, "--create-namespace", "--set", "replicas=two"); err == nil || !strings.Contains(err.Error(), "at '/replicas': got string, want integer") {
		t.Errorf("helm install --set replicas=two: got %v, want the schema's refusal naming the value", err)
	}
	out := mustHelm("install", "mto", chartDir, "--create-namespace")
	notes := out[strings.Index(out, "NOTES:"):]
	for _, want := range []string{"kubectl get mlflowaccesstokens -A", "helm test mto -n helm-real"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}
	for _, bad := range []string{"config/", "docs/", ".md", "mlflowtokens"} {
		if strings.Contains(notes, bad) {
			t.Errorf("NOTES mention %q: nothing outside the packaged chart, and only resource names kubectl knows:\n%s", bad, notes)
		}
	}
	for name := range allCRDs {
		if o := crd(name); o == nil || o.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Fatalf("after install, CRD %s is %v, want it with the keep policy", name, o)
		}
	}

	for _, bad := range []string{"replicas=two", "logging.level=verbose"} {
		if _, err := helm("upgrade", "mto", chartDir, "--set", bad); err == nil || !strings.Contains(err.Error(), "values don't meet the specifications of the schema") {
			t.Errorf("helm upgrade --set %s: got %v, want the schema's refusal", bad, err)
		}
	}
	mustHelm("upgrade", "mto", chartDir, "--set", "replicas=2")
	pdb := &policyv1.PodDisruptionBudget{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mto-mlflow-token-operator-controller-manager"}, pdb); err != nil {
		t.Errorf("after the upgrade to two replicas: %v, want a PodDisruptionBudget", err)
	}

	mustHelm("uninstall", "mto", "--no-hooks")
	for name := range allCRDs {
		if crd(name) == nil {
			t.Fatalf("helm uninstall deleted CRD %s despite crds.keep", name)
		}
	}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mto-mlflow-token-operator-controller-manager"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("after uninstall the Deployment is still there (%v)", err)
	}

	// The kept CRD belongs to release mto: installing mto again adopts it.
	mustHelm("install", "mto", chartDir, "--set", "crds.keep=false")
	waitServed()
	mustHelm("uninstall", "mto", "--no-hooks")
	waitCRDsGone()

	// A CRD applied by hand: Helm refuses to take it over, until labelled and annotated as the
	// README says.
	gen := decodeObjects(t, mustRead(t, "config/crd/bases/auth.mlflow-token-operator.io_mlflowaccesstokens.yaml"))[0]
	if err := c.Create(ctx, gen); err != nil {
		t.Fatal(err)
	}
	if _, err := helm("install", "mto", chartDir); err == nil || !strings.Contains(err.Error(), "cannot be imported into the current release") {
		t.Fatalf("installing over a CRD Helm does not own: got %v, want Helm's refusal", err)
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gen.GroupVersionKind())
	if err := c.Get(ctx, types.NamespacedName{Name: crdName}, u); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(u.DeepCopy())
	u.SetLabels(map[string]string{"app.kubernetes.io/managed-by": "Helm"})
	u.SetAnnotations(map[string]string{"meta.helm.sh/release-name": "mto", "meta.helm.sh/release-namespace": ns})
	if err := c.Patch(ctx, u, patch); err != nil {
		t.Fatal(err)
	}
	if _, err := helm("install", "mto", chartDir, "--set", "crds.keep=false"); err != nil {
		t.Fatalf("installing after adopting the CRD as the README says: %v", err)
	}
	waitServed()
	mustHelm("uninstall", "mto", "--no-hooks")
	waitCRDsGone()
}

// TestUninstallWithoutCRD: with the CRDs gone or never installed (crds.enabled=false), the
// uninstall hook's command finds nothing to clean up and succeeds, in both modes, rather than
// failing the uninstall. (This API server serves no CRD; test/uninstall covers the rest.)
func TestUninstallWithoutCRD(t *testing.T) {
	apiServer(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"revoke", "orphan"} {
		out, err := exec.Command(managerBinary(t), "uninstall", "--mode="+mode, "--timeout=20s", "--kubeconfig="+kubeconfig).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "is not served (no CRD): nothing to clean up") {
			t.Errorf("manager uninstall --mode=%s without the CRD: %v\n%s", mode, err, out)
		}
	}
}
