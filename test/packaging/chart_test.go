package packaging

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const chartDir = "charts/mlflow-token-operator"

// helmTemplate renders the chart as `helm install` would (CRDs included) with the given values.
func helmTemplate(t *testing.T, release, namespace, values string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace, "--include-crds"}
	if values != "" {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	return decodeObjects(t, run(t, nil, tool(t, "helm"), args...))
}

// TestChartCopiesAreTheGeneratedOnes fails when the chart's crds/ is not a byte-for-byte copy of
// config/crd/bases, or files/manager-role.yaml of config/rbac/role.yaml: run `make helm-sync`
// after `make manifests`.
func TestChartCopiesAreTheGeneratedOnes(t *testing.T) {
	root := repoRoot(t)
	gen, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(gen) == 0 {
		t.Fatalf("no generated CRDs in config/crd/bases (%v)", err)
	}
	inChart, _ := filepath.Glob(filepath.Join(root, chartDir, "crds", "*.yaml"))
	names := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		sort.Strings(out)
		return out
	}
	if !reflect.DeepEqual(names(gen), names(inChart)) {
		t.Fatalf("chart CRDs %v differ from config/crd/bases %v: run `make helm-sync`", names(inChart), names(gen))
	}
	for _, p := range gen {
		want, _ := os.ReadFile(p)
		got, _ := os.ReadFile(filepath.Join(root, chartDir, "crds", filepath.Base(p)))
		if string(got) != string(want) {
			t.Errorf("%s/crds/%s differs from the generated CRD: run `make helm-sync`", chartDir, filepath.Base(p))
		}
	}
	role, _ := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	copied, err := os.ReadFile(filepath.Join(root, chartDir, "files", "manager-role.yaml"))
	if err != nil || string(role) != string(copied) {
		t.Errorf("%s/files/manager-role.yaml differs from config/rbac/role.yaml (%v): run `make helm-sync`", chartDir, err)
	}
}

// TestChartLint runs `helm lint --strict` with default and non-default values.
func TestChartLint(t *testing.T) {
	helm := tool(t, "helm")
	run(t, nil, helm, "lint", "--strict", chartDir)
	run(t, nil, helm, "lint", "--strict", chartDir, "--set", "replicas=2,watchNamespaces={a,b},metrics.enabled=false")
}

// TestChartDefaultValues renders the chart with its defaults under the release name the docs use
// and checks it yields the same objects as `make build-installer` (except the Namespace, which
// `helm install --create-namespace` makes), with the generated RBAC rules; then applies it with a
// server-side dry run and has PodSecurity admission judge the pod.
func TestChartDefaultValues(t *testing.T) {
	objs := helmTemplate(t, "mlflow-token-operator", "mlflow-token-operator-system", "")

	var got, want []string
	for _, o := range objs {
		got = append(got, key(o))
	}
	for _, o := range decodeObjects(t, kustomizeDefault(t)) {
		if o.GetKind() != "Namespace" {
			want = append(want, key(o))
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the chart's objects differ from config/default's:\n chart     %v\n kustomize %v", got, want)
	}

	role := convert[rbacv1.ClusterRole](t, only(t, objs, "ClusterRole"))
	if r, w := ruleSet(role.Rules), generatedRules(t); !reflect.DeepEqual(r, w) {
		t.Errorf("ClusterRole rules differ from config/rbac/role.yaml:\n got %v\nwant %v", r, w)
	}
	d := deployment(t, objs)
	for _, a := range []string{"--leader-elect", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081", "--zap-log-level=info"} {
		if !hasArg(d, a) {
			t.Errorf("default Deployment lacks %s (args %v)", a, d.Spec.Template.Spec.Containers[0].Args)
		}
	}
	if a := argWithPrefix(d, "--namespaces"); a != "" {
		t.Errorf("default values watch all namespaces, got %s", a)
	}
	if *d.Spec.Replicas != 1 {
		t.Errorf("replicas = %d, want 1", *d.Spec.Replicas)
	}
	applyDryRun(t, objs)
	podSecurityAdmits(t, d, "psa-chart-default")
}

// TestChartNonDefaultValues: several replicas (leader election forced on), custom image and
// resources, metrics on another port, debug logging, and a namespace scope: Roles and
// RoleBindings in the watched namespaces instead of any cluster-wide access.
func TestChartNonDefaultValues(t *testing.T) {
	objs := helmTemplate(t, "tokens", "ml-platform", `
image: {repository: registry.example.com/ml/mlflow-token-operator, tag: v2.0.0, pullPolicy: Always}
replicas: 3
leaderElection: {enabled: false}
resources:
  requests: {cpu: 100m, memory: 128Mi}
  limits: {cpu: "1", memory: 512Mi}
metrics: {enabled: true, port: 9090}
logging: {level: debug, encoder: console}
watchNamespaces: [team-a, team-b]
extraArgs: ["--concurrency=8", "--keycloak-timeout=10s"]
podAnnotations: {example.com/owner: ml-platform}
`)
	for _, k := range []string{"ClusterRole", "ClusterRoleBinding"} {
		if n := len(find(objs, k)); n != 0 {
			t.Errorf("a namespace-scoped install must not create a %s (found %d)", k, n)
		}
	}
	want := generatedRules(t)
	roleNS := map[string]bool{}
	for _, o := range find(objs, "Role") {
		if o.GetNamespace() == "ml-platform" {
			continue // leader election
		}
		roleNS[o.GetNamespace()] = true
		if r := ruleSet(convert[rbacv1.Role](t, o).Rules); !reflect.DeepEqual(r, want) {
			t.Errorf("%s rules differ from config/rbac/role.yaml:\n got %v\nwant %v", key(o), r, want)
		}
	}
	bindingNS := map[string]bool{}
	for _, o := range find(objs, "RoleBinding") {
		bindingNS[o.GetNamespace()] = true
	}
	for _, ns := range []string{"team-a", "team-b"} {
		if !roleNS[ns] || !bindingNS[ns] {
			t.Errorf("no Role and RoleBinding in watched namespace %s", ns)
		}
	}
	if len(roleNS) != 2 {
		t.Errorf("manager Roles in %v, want only team-a and team-b", roleNS)
	}

	d := deployment(t, objs)
	for _, a := range []string{"--leader-elect", "--namespaces=team-a,team-b", "--metrics-bind-address=:9090",
		"--zap-log-level=debug", "--zap-encoder=console", "--concurrency=8", "--keycloak-timeout=10s"} {
		if !hasArg(d, a) {
			t.Errorf("Deployment lacks %s (args %v)", a, d.Spec.Template.Spec.Containers[0].Args)
		}
	}
	if *d.Spec.Replicas != 3 {
		t.Errorf("replicas = %d, want 3", *d.Spec.Replicas)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example.com/ml/mlflow-token-operator:v2.0.0" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %s (%s), want the values' image with pull policy Always", c.Image, c.ImagePullPolicy)
	}
	if !c.Resources.Limits.Cpu().Equal(resource.MustParse("1")) || !c.Resources.Requests.Memory().Equal(resource.MustParse("128Mi")) {
		t.Errorf("resources %v, want the values' resources", c.Resources)
	}
	if d.Spec.Template.Annotations["example.com/owner"] != "ml-platform" {
		t.Error("pod annotations are not applied")
	}
	svc := convert[corev1.Service](t, only(t, objs, "Service"))
	if svc.Spec.Ports[0].Port != 9090 {
		t.Errorf("metrics Service port %d, want 9090", svc.Spec.Ports[0].Port)
	}
	if len(find(objs, "CustomResourceDefinition")) != 1 {
		t.Error("the CRD is missing from the rendering")
	}

	c8s := apiServer(t)
	ensureNamespace(t, c8s, "team-a", nil)
	ensureNamespace(t, c8s, "team-b", nil)
	applyDryRun(t, objs)
	podSecurityAdmits(t, d, "psa-chart-custom")
}

// TestChartMetricsOffSingleReplica: metrics off removes the Service and the port and turns the
// endpoint off; one replica with leaderElection.enabled=false runs without leader election and
// without its Role.
func TestChartMetricsOffSingleReplica(t *testing.T) {
	objs := helmTemplate(t, "mlflow-token-operator", "solo", `
replicas: 1
leaderElection: {enabled: false}
metrics: {enabled: false}
`)
	if n := len(find(objs, "Service")); n != 0 {
		t.Errorf("metrics disabled, but %d Service(s) rendered", n)
	}
	d := deployment(t, objs)
	if !hasArg(d, "--metrics-bind-address=0") {
		t.Error("metrics disabled, but the endpoint is not turned off (--metrics-bind-address=0)")
	}
	if hasArg(d, "--leader-elect") {
		t.Error("one replica with leaderElection.enabled=false should not elect a leader")
	}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		if p.Name == "metrics" {
			t.Error("metrics disabled, but the container still declares a metrics port")
		}
	}
	for _, o := range find(objs, "Role") {
		t.Errorf("unexpected %s without leader election or namespace scope", key(o))
	}
	applyDryRun(t, objs)
}

// TestChartServiceMonitor: with metrics.serviceMonitor.enabled the chart adds a ServiceMonitor
// that selects the metrics Service, scrapes its named port, and honours the per-token
// `namespace` label. (Not applied to the API server: its CRD belongs to the Prometheus Operator.)
func TestChartServiceMonitor(t *testing.T) {
	objs := helmTemplate(t, "mlflow-token-operator", "monitoring", `
metrics: {serviceMonitor: {enabled: true, interval: 15s, labels: {release: kube-prometheus-stack}}}
`)
	sm := only(t, objs, "ServiceMonitor")
	svc := convert[corev1.Service](t, only(t, objs, "Service"))
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	for k, v := range sel {
		if svc.Labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%s, which the metrics Service does not carry", k, v)
		}
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("want one endpoint, got %d", len(eps))
	}
	ep := eps[0].(map[string]any)
	if ep["port"] != svc.Spec.Ports[0].Name || ep["honorLabels"] != true || ep["interval"] != "15s" {
		t.Errorf("endpoint %v: want port %s, honorLabels true, interval 15s", ep, svc.Spec.Ports[0].Name)
	}
	if sm.GetLabels()["release"] != "kube-prometheus-stack" {
		t.Error("serviceMonitor.labels are not applied")
	}
	var rest []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() != "ServiceMonitor" {
			rest = append(rest, o)
		}
	}
	applyDryRun(t, rest)

	if n := len(find(helmTemplate(t, "x", "monitoring", `metrics: {enabled: false, serviceMonitor: {enabled: true}}`), "ServiceMonitor")); n != 0 {
		t.Error("a ServiceMonitor is rendered although metrics are disabled")
	}
}
