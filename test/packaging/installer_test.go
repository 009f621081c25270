package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestInstaller runs `make build-installer` and checks dist/install.yaml: the objects it must
// hold, the image, the generated CRD and RBAC rules, the Deployment (restricted, flags that
// exist, Service that fits), and that the API server accepts every object (server-side dry run)
// and admits the operator's pod under the restricted Pod Security Standard.
func TestInstaller(t *testing.T) {
	tool(t, "kustomize")
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is not installed")
	}
	dist := t.TempDir()
	run(t, nil, "make", "-s", "build-installer", "DIST="+dist, "IMG=registry.example.com/ml/mlflow-token-operator:v1.2.3")
	data, err := os.ReadFile(filepath.Join(dist, "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeObjects(t, data)

	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
		if !slices.Contains([]string{"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
			"ValidatingAdmissionPolicyBinding"}, o.GetKind()) && o.GetNamespace() != "mlflow-token-operator-system" {
			t.Errorf("%s is not in the namespace mlflow-token-operator-system", key(o))
		}
	}
	for _, k := range []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service"} {
		if kinds[k] == 0 {
			t.Errorf("install.yaml has no %s", k)
		}
	}

	// Every generated CRD, as generated.
	bases, err := filepath.Glob(filepath.Join(repoRoot(t), "config", "crd", "bases", "*.yaml"))
	if err != nil || len(bases) == 0 {
		t.Fatalf("no generated CRDs: %v", err)
	}
	crds := map[string]map[string]any{}
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			crds[o.GetName()] = o.Object
		}
	}
	if len(crds) != len(bases) {
		t.Errorf("install.yaml has %d CRDs, config/crd/bases %d", len(crds), len(bases))
	}
	for _, b := range bases {
		gen := decodeObjects(t, mustRead(t, strings.TrimPrefix(b, repoRoot(t)+"/")))[0]
		if !reflect.DeepEqual(crds[gen.GetName()], gen.Object) {
			t.Errorf("the CRD %s in install.yaml differs from config/crd/bases", gen.GetName())
		}
	}
	role := convert[rbacv1.ClusterRole](t, managerRole(t, objs))
	if got, want := ruleSet(role.Rules), generatedRules(t); !reflect.DeepEqual(got, want) {
		t.Errorf("ClusterRole rules differ from config/rbac/role.yaml:\n got %v\nwant %v", got, want)
	}

	d := deployment(t, objs)
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "registry.example.com/ml/mlflow-token-operator:v1.2.3" {
		t.Errorf("image = %s, want the IMG passed to make", img)
	}
	if !hasArg(d, "--leader-elect") {
		t.Error("the Deployment should run with --leader-elect")
	}
	if a := argWithPrefix(d, "--namespaces"); a != "" {
		t.Errorf("the default install watches all namespaces, but the Deployment has %s", a)
	}
	ns := only(t, objs, "Namespace")
	if ns.GetLabels()["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Error("the operator's Namespace should enforce the restricted Pod Security Standard")
	}

	applyDryRun(t, objs)
	podSecurityAdmits(t, d, "psa-installer")
}

func mustRead(t testing.TB, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// kustomizeDefault renders config/default as build-installer does, without the image override.
func kustomizeDefault(t testing.TB) []byte {
	t.Helper()
	return run(t, nil, tool(t, "kustomize"), "build", "config/default")
}
