package packaging

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

func convert[T any](t testing.TB, o *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, out); err != nil {
		t.Fatalf("converting %s: %v", key(o), err)
	}
	return out
}

// ruleSet flattens RBAC rules into "group/resource verb" entries, so that rules written in a
// different order or grouping compare equal.
func ruleSet(rules []rbacv1.PolicyRule) []string {
	set := map[string]bool{}
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					set[g+"/"+res+" "+v] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// generatedRules are the operator's permissions as controller-gen generated them.
func generatedRules(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(data, &role); err != nil {
		t.Fatal(err)
	}
	if len(role.Rules) == 0 {
		t.Fatal("config/rbac/role.yaml has no rules")
	}
	return ruleSet(role.Rules)
}

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
	flagsOnce sync.Once
	flagSet   map[string]bool
	flagsErr  error
)

// managerBinary builds cmd/ once per test binary (removed by TestMain).
func managerBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "packaging-manager"); buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "manager")
		build := exec.Command("go", "build", "-o", binPath, "./cmd")
		build.Dir = repoRoot(t)
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building ./cmd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// parseFlags reads flag names from a Go flag package's usage text.
func parseFlags(usage string) map[string]bool {
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`).FindAllStringSubmatch(usage, -1) {
		out[m[1]] = true
	}
	return out
}

// operatorFlags lists the flags the operator's -h prints, so that a manifest passing a flag the
// operator does not have fails here rather than in a crash-looping pod.
func operatorFlags(t testing.TB) map[string]bool {
	t.Helper()
	bin := managerBinary(t)
	flagsOnce.Do(func() {
		out, _ := exec.Command(bin, "-h").CombinedOutput() // -h exits non-zero on some Go versions
		flagSet = parseFlags(string(out))
		if !flagSet["metrics-bind-address"] {
			flagsErr = fmt.Errorf("could not read the operator's flags from -h:\n%s", out)
		}
	})
	if flagsErr != nil {
		t.Fatal(flagsErr)
	}
	return flagSet
}

// deployment checks what every rendering of the operator must get right and returns the
// Deployment for case-specific checks: the restricted security context, a ServiceAccount and
// bindings that fit together, a metrics Service that selects the pods and names a real port, and
// flags that the operator has.
func deployment(t *testing.T, objs []*unstructured.Unstructured) *appsv1.Deployment {
	t.Helper()
	d := convert[appsv1.Deployment](t, only(t, objs, "Deployment"))
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]

	// Restricted Pod Security Standard, checked field by field here and by the API server's
	// PodSecurity admission in podSecurityAdmits.
	psc, sc := pod.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot:
		t.Error("pod securityContext.runAsNonRoot must be true")
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("pod securityContext.seccompProfile must be RuntimeDefault")
	}
	switch {
	case sc == nil:
		t.Fatal("the container has no securityContext")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation must be false")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem must be true")
	case sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Error("capabilities must drop ALL")
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Error("liveness and readiness probes are required")
	}

	flags := operatorFlags(t)
	for _, a := range c.Args {
		name := strings.SplitN(strings.TrimLeft(a, "-"), "=", 2)[0]
		if !strings.HasPrefix(a, "-") || !flags[name] {
			t.Errorf("argument %q is not a flag of the operator (cmd/main.go)", a)
		}
	}

	// ServiceAccount and bindings.
	sa := pod.ServiceAccountName
	foundSA := false
	for _, o := range find(objs, "ServiceAccount") {
		if o.GetName() == sa && o.GetNamespace() == d.Namespace {
			foundSA = true
		}
	}
	if !foundSA {
		t.Errorf("ServiceAccount %s/%s used by the Deployment is not in the manifest", d.Namespace, sa)
	}
	for _, kind := range []string{"RoleBinding", "ClusterRoleBinding"} {
		for _, o := range find(objs, kind) {
			if strings.HasSuffix(o.GetName(), "-metrics-reader") {
				continue // binds Prometheus and the helm test, not the operator
			}
			b := convert[rbacv1.RoleBinding](t, o) // same shape for both kinds
			if len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != sa || b.Subjects[0].Namespace != d.Namespace {
				t.Errorf("%s binds %v, want the ServiceAccount %s/%s", key(o), b.Subjects, d.Namespace, sa)
			}
			roleNS := ""
			if b.RoleRef.Kind == "Role" {
				roleNS = o.GetNamespace()
			}
			found := false
			for _, r := range find(objs, b.RoleRef.Kind) {
				found = found || (r.GetName() == b.RoleRef.Name && r.GetNamespace() == roleNS)
			}
			if !found {
				t.Errorf("%s refers to %s %s/%s, which is not in the manifest", key(o), b.RoleRef.Kind, roleNS, b.RoleRef.Name)
			}
		}
	}

	// Metrics Service.
	for _, o := range find(objs, "Service") {
		svc := convert[corev1.Service](t, o)
		for k, v := range svc.Spec.Selector {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("%s selects %s=%s, which the operator's pods do not carry", key(o), k, v)
			}
		}
		for _, p := range svc.Spec.Ports {
			ok := false
			for _, cp := range c.Ports {
				ok = ok || (p.TargetPort.StrVal != "" && cp.Name == p.TargetPort.StrVal) || (p.TargetPort.IntVal != 0 && cp.ContainerPort == p.TargetPort.IntVal)
			}
			if !ok {
				t.Errorf("%s port %s targets %s, which is not a container port", key(o), p.Name, p.TargetPort.String())
			}
		}
	}
	return d
}

// podSecurityAdmits creates the Deployment's pod (dry run) in a namespace that enforces the
// restricted Pod Security Standard, so the API server's PodSecurity admission judges it. A
// deliberately non-compliant copy must be rejected, or the check would prove nothing.
func podSecurityAdmits(t *testing.T, d *appsv1.Deployment, nsName string) {
	t.Helper()
	podSpecAdmitted(t, "operator", d.Spec.Template.Labels, d.Spec.Template.Spec, nsName)
}

// podSpecAdmitted is podSecurityAdmits for any pod (the chart's hook and test pods too).
func podSpecAdmitted(t *testing.T, name string, labels map[string]string, spec corev1.PodSpec, nsName string) {
	t.Helper()
	c := apiServer(t)
	ctx := context.Background()
	ensureNamespace(t, c, nsName, map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	})
	saName := spec.ServiceAccountName
	if saName == "" {
		saName = "default" // envtest runs no controller that would create it
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: saName, Namespace: nsName}}
	if err := c.Create(ctx, sa); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: nsName, Labels: labels}, Spec: *spec.DeepCopy()}
	if err := c.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Errorf("pod %s is rejected in a namespace enforcing the restricted Pod Security Standard: %v", name, err)
	}
	bad := pod.DeepCopy()
	bad.Spec.Containers[0].SecurityContext = nil
	err := c.Create(ctx, bad, client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), "PodSecurity") {
		t.Fatalf("control: a pod without a container securityContext should be rejected by PodSecurity admission, got %v", err)
	}
}

func hasArg(d *appsv1.Deployment, arg string) bool {
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if a == arg {
			return true
		}
	}
	return false
}

func argWithPrefix(d *appsv1.Deployment, prefix string) string {
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, prefix) {
			return a
		}
	}
	return ""
}
