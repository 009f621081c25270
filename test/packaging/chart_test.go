package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

const chartDir = "charts/mlflow-token-operator"

// helmTemplate renders the chart as `helm install` would, hooks and tests included, with the
// given values.
func helmTemplate(t *testing.T, release, namespace, values string) []*unstructured.Unstructured {
	t.Helper()
	out, err := helmTemplateErr(t, release, namespace, values)
	if err != nil {
		t.Fatal(err)
	}
	return decodeObjects(t, out)
}

// helmTemplateErr is helmTemplate returning Helm's error (its stderr) instead of failing.
func helmTemplateErr(t *testing.T, release, namespace, values string, extra ...string) ([]byte, error) {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace}
	if values != "" {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	return runErr(t, tool(t, "helm"), append(args, extra...)...)
}

// runErr runs a command in the repository root and returns its standard output, or an error
// holding its standard error.
func runErr(t testing.TB, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = repoRoot(t)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), &cmdError{err: err, stderr: errb.String()}
	}
	return out.Bytes(), nil
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + e.stderr }

// hookOf returns an object's Helm hook annotation ("" for release objects).
func hookOf(o *unstructured.Unstructured) string { return o.GetAnnotations()["helm.sh/hook"] }

// releaseObjects are the objects Helm installs as the release (no hooks, no tests).
func releaseObjects(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if hookOf(o) == "" {
			out = append(out, o)
		}
	}
	return out
}

// hookObjects are the objects of one Helm hook.
func hookObjects(objs []*unstructured.Unstructured, hook string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if hookOf(o) == hook {
			out = append(out, o)
		}
	}
	return out
}

// TestChartCopiesAreTheGeneratedOnes fails when the chart's copies differ from the files they
// copy: every CRD of config/crd/bases in files/crds/, the generated RBAC role, the alerts and the
// dashboard. Run `make helm-sync` (make manifests runs it).
func TestChartCopiesAreTheGeneratedOnes(t *testing.T) {
	root := repoRoot(t)
	gen, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(gen) == 0 {
		t.Fatalf("no generated CRDs in config/crd/bases (%v)", err)
	}
	inChart, _ := filepath.Glob(filepath.Join(root, chartDir, "files", "crds", "*.yaml"))
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
	copies := map[string]string{
		"config/rbac/role.yaml":                     "files/manager-role.yaml",
		"config/prometheus/rules.yaml":              "files/prometheus-rules.yaml",
		"config/grafana/mlflow-token-operator.json": "files/grafana-dashboard.json",
	}
	for _, p := range gen {
		copies[filepath.Join("config", "crd", "bases", filepath.Base(p))] = filepath.Join("files", "crds", filepath.Base(p))
	}
	for src, dst := range copies {
		want := mustRead(t, src)
		got, err := os.ReadFile(filepath.Join(root, chartDir, dst))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s/%s differs from %s (%v): run `make helm-sync`", chartDir, dst, src, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, chartDir, "crds")); err == nil {
		t.Errorf("%s/crds exists: Helm would install those CRDs once and never upgrade them; they are templates (files/crds)", chartDir)
	}
}

// TestChartLint runs `helm lint --strict` with default and non-default values.
func TestChartLint(t *testing.T) {
	helm := tool(t, "helm")
	run(t, nil, helm, "lint", "--strict", chartDir)
	run(t, nil, helm, "lint", "--strict", chartDir, "--set", "replicas=2,watchNamespaces={a,b},metrics.enabled=false,uninstall.revokeTokens=false")
	run(t, nil, helm, "lint", "--strict", chartDir, "--set", "prometheusRule.enabled=true,grafanaDashboard.enabled=true,metrics.serviceMonitor.enabled=true,crds.enabled=false")
}

// TestChartDefaultValues renders the chart with its defaults under the release name the docs use
// and checks it yields the same objects as `make build-installer` (except the Namespace, which
// `helm install --create-namespace` makes), with the generated RBAC rules and CRD; then applies
// it with a server-side dry run and has PodSecurity admission judge the pods.
func TestChartDefaultValues(t *testing.T) {
	objs := helmTemplate(t, "mlflow-token-operator", "mlflow-token-operator-system", "")
	rel := releaseObjects(objs)

	var got, want []string
	for _, o := range rel {
		// The helm test's ServiceAccount and its metrics-reader binding are the chart's own.
		if o.GetName() == "mlflow-token-operator-test" || (o.GetKind() == "ClusterRoleBinding" && strings.HasSuffix(o.GetName(), "-metrics-reader")) {
			continue
		}
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

	role := convert[rbacv1.ClusterRole](t, managerRole(t, rel))
	if r, w := ruleSet(role.Rules), generatedRules(t); !reflect.DeepEqual(r, w) {
		t.Errorf("ClusterRole rules differ from config/rbac/role.yaml:\n got %v\nwant %v", r, w)
	}
	// Leader election records its LeaderElection event in the core group (client-go), the
	// operator's own events in events.k8s.io.
	le := ruleSet(convert[rbacv1.Role](t, only(t, rel, "Role")).Rules)
	for _, r := range []string{"/events create", "/events patch", "events.k8s.io/events create", "coordination.k8s.io/leases update"} {
		if !slices.Contains(le, r) {
			t.Errorf("the leader-election Role lacks %q (has %v)", r, le)
		}
	}
	if kle := ruleSet(convert[rbacv1.Role](t, only(t, decodeObjects(t, kustomizeDefault(t)), "Role")).Rules); !reflect.DeepEqual(kle, le) {
		t.Errorf("leader-election rules differ between the chart %v and config/rbac %v", le, kle)
	}

	d := deployment(t, rel)
	for _, a := range []string{"--leader-elect", "--metrics-bind-address=:8443", "--metrics-secure=true", "--health-probe-bind-address=:8081", "--zap-log-level=info"} {
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
	if img, want := d.Spec.Template.Spec.Containers[0].Image, "ghcr.io/mlflow-token-operator/mlflow-token-operator:"+testenv.ImageTag(); img != want {
		t.Errorf("default image %s, want %s (the chart's appVersion)", img, want)
	}
	// A numeric user, so that the kubelet runs the pod under runAsNonRoot whatever USER the
	// image declares (found on a real node).
	if psc := d.Spec.Template.Spec.SecurityContext; psc.RunAsUser == nil || *psc.RunAsUser != 65532 || psc.RunAsGroup == nil || *psc.RunAsGroup != 65532 {
		t.Errorf("pod securityContext %+v: want runAsUser and runAsGroup 65532", psc)
	}
	if n := len(find(objs, "PodDisruptionBudget")); n != 0 {
		t.Errorf("one replica, but %d PodDisruptionBudget(s)", n)
	}

	// The CRDs: the generated ones, kept on uninstall.
	gen := generatedCRDs(t)
	crds := find(rel, "CustomResourceDefinition")
	if len(crds) != len(gen) {
		t.Errorf("the chart renders %d CRDs, config/crd/bases has %d", len(crds), len(gen))
	}
	for _, crd := range crds {
		g, ok := gen[crd.GetName()]
		if !ok {
			t.Errorf("the chart renders CRD %s, which is not in config/crd/bases", crd.GetName())
			continue
		}
		if !reflect.DeepEqual(crd.Object["spec"], g.Object["spec"]) {
			t.Errorf("the chart's CRD %s differs from config/crd/bases", crd.GetName())
		}
		if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s should carry helm.sh/resource-policy: keep by default (crds.keep)", crd.GetName())
		}
		if crd.GetAnnotations()["controller-gen.kubebuilder.io/version"] == "" || crd.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("CRD %s should keep its own annotations and get the chart's labels: %v %v", crd.GetName(), crd.GetAnnotations(), crd.GetLabels())
		}
	}

	applyDryRun(t, rel)
	podSecurityAdmits(t, d, "psa-chart-default")

	// Hooks: the uninstall Job (and its RBAC), and the helm test pod.
	uninstall := hookObjects(objs, "pre-delete")
	job := convert[batchv1.Job](t, only(t, uninstall, "Job"))
	checkUninstallJob(t, uninstall, job, "revoke", nil)
	podSpecAdmitted(t, "uninstall", job.Spec.Template.Labels, job.Spec.Template.Spec, "psa-chart-default")
	applyDryRun(t, uninstall)
	test := convert[corev1.Pod](t, only(t, hookObjects(objs, "test"), "Pod"))
	svc := convert[corev1.Service](t, only(t, rel, "Service"))
	wantURL := "https://" + svc.Name + ".mlflow-token-operator-system.svc:8443/metrics"
	wantArgs := []string{"probe", "--timeout=2m", "--bearer-token-file=/var/run/secrets/kubernetes.io/serviceaccount/token", "--insecure-skip-tls-verify", wantURL}
	if c := test.Spec.Containers[0]; c.Image != d.Spec.Template.Spec.Containers[0].Image || !reflect.DeepEqual(c.Args, wantArgs) {
		t.Errorf("helm test pod runs %s %v, want the operator's image with probe %s", c.Image, c.Args, wantURL)
	}
	podSpecAdmitted(t, "test", test.Labels, test.Spec, "psa-chart-default")
	for _, a := range []string{"probe", "uninstall"} {
		if !subcommandFlags(t, a)["timeout"] {
			t.Errorf("manager %s has no --timeout flag", a)
		}
	}
}

// generatedCRDs are the CRDs of config/crd/bases by name.
func generatedCRDs(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v)", err)
	}
	out := map[string]*unstructured.Unstructured{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range decodeObjects(t, b) {
			out[o.GetName()] = o
		}
	}
	return out
}

// checkUninstallJob checks the uninstall hook: its annotations, a command line the operator's
// `manager uninstall` accepts, and RBAC that binds its own ServiceAccount, created before it.
func checkUninstallJob(t *testing.T, hook []*unstructured.Unstructured, job *batchv1.Job, mode string, namespaces []string) {
	t.Helper()
	if job.Annotations["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" {
		t.Errorf("uninstall Job delete policy %q: a failed Job must stay for its logs, and be replaced on the next try", job.Annotations["helm.sh/hook-delete-policy"])
	}
	c := job.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "uninstall" || !slices.Contains(c.Args, "--mode="+mode) {
		t.Errorf("uninstall Job args %v, want `uninstall --mode=%s ...`", c.Args, mode)
	}
	flags := subcommandFlags(t, "uninstall")
	for _, a := range c.Args[1:] {
		name := strings.SplitN(strings.TrimLeft(a, "-"), "=", 2)[0]
		if !strings.HasPrefix(a, "-") || !flags[name] {
			t.Errorf("uninstall Job argument %q is not a flag of `manager uninstall`", a)
		}
	}
	if ns := strings.Join(namespaces, ","); ns != "" && !slices.Contains(c.Args, "--namespaces="+ns) {
		t.Errorf("uninstall Job args %v lack --namespaces=%s", c.Args, ns)
	}
	sa := job.Spec.Template.Spec.ServiceAccountName
	found := false
	for _, o := range hook {
		if o.GetKind() == "ServiceAccount" && o.GetName() == sa {
			found = true
		}
		if o.GetKind() != "Job" && o.GetAnnotations()["helm.sh/hook-weight"] >= job.Annotations["helm.sh/hook-weight"] {
			t.Errorf("%s has hook weight %s, not below the Job's %s: it may not exist when the Job starts",
				key(o), o.GetAnnotations()["helm.sh/hook-weight"], job.Annotations["helm.sh/hook-weight"])
		}
		if strings.HasSuffix(o.GetKind(), "Binding") {
			b := convert[rbacv1.RoleBinding](t, o)
			if len(b.Subjects) != 1 || b.Subjects[0].Name != sa || b.Subjects[0].Namespace != job.Namespace {
				t.Errorf("%s binds %v, want the hook's ServiceAccount %s/%s", key(o), b.Subjects, job.Namespace, sa)
			}
		}
	}
	if !found {
		t.Errorf("the hook's ServiceAccount %s is not a hook resource", sa)
	}
}

var subcommandFlagSets = map[string]map[string]bool{}

// subcommandFlags lists the flags of `manager <sub> -h`.
func subcommandFlags(t *testing.T, sub string) map[string]bool {
	t.Helper()
	if f, ok := subcommandFlagSets[sub]; ok {
		return f
	}
	out, _ := exec.Command(managerBinary(t), sub, "-h").CombinedOutput()
	f := parseFlags(string(out))
	if len(f) == 0 {
		t.Fatalf("could not read the flags of `manager %s -h`:\n%s", sub, out)
	}
	subcommandFlagSets[sub] = f
	return f
}

// TestChartNonDefaultValues: several replicas (leader election forced on, a
// PodDisruptionBudget), an image pinned by digest, resources, metrics on another port, debug
// logging, a proxy in the environment, an extra volume, topology spread, and a namespace scope:
// Roles and RoleBindings in the watched namespaces instead of any cluster-wide access, for the
// operator and for the uninstall hook.
func TestChartNonDefaultValues(t *testing.T) {
	const digest = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
	objs := helmTemplate(t, "tokens", "ml-platform", `
image: {repository: registry.example.com/ml/mlflow-token-operator, tag: v2.0.0, digest: `+digest+`, pullPolicy: Always}
replicas: 3
leaderElection: {enabled: false}
resources:
  requests: {cpu: 100m, memory: 128Mi}
  limits: {cpu: "1", memory: 512Mi}
metrics: {enabled: true, port: 9090}
logging: {level: debug, encoder: console}
watchNamespaces: [team-a, team-b]
extraArgs: ["--concurrency=8", "--keycloak-timeout=10s"]
extraEnv:
- {name: HTTPS_PROXY, value: "http://proxy.example.com:3128"}
- {name: NO_PROXY, value: ".svc,.cluster.local"}
extraVolumes: [{name: ca, configMap: {name: corporate-ca}}]
extraVolumeMounts: [{name: ca, mountPath: /etc/corporate-ca, readOnly: true}]
topologySpreadConstraints:
- {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
podAnnotations: {example.com/owner: ml-platform}
podDisruptionBudget: {minAvailable: 2}
`)
	rel := releaseObjects(objs)
	// A namespace-scoped install still reads what is cluster-scoped (namespaces' metadata,
	// ClusterKeycloakIssuers) and asks for the metrics endpoint's reviews, and nothing else
	// cluster-wide: no Secrets, no tokens. (Besides, the chart has the metrics reader's role and the
	// roles aggregated into view and edit, which grant the operator nothing.)
	var operatorCluster []string
	for _, o := range find(objs, "ClusterRoleBinding") {
		if subj := convert[rbacv1.ClusterRoleBinding](t, o).Subjects; len(subj) == 1 && strings.HasSuffix(subj[0].Name, "-controller-manager") {
			operatorCluster = append(operatorCluster, convert[rbacv1.ClusterRoleBinding](t, o).RoleRef.Name)
		}
	}
	if len(operatorCluster) != 1 {
		t.Errorf("a namespace-scoped install must bind the operator to exactly one ClusterRole, for cluster-scoped reads (found %v)", operatorCluster)
	}
	for _, o := range find(objs, "ClusterRole") {
		if !slices.Contains(operatorCluster, o.GetName()) {
			continue
		}
		for _, rule := range convert[rbacv1.ClusterRole](t, o).Rules {
			for _, res := range rule.Resources {
				if !slices.Contains([]string{"namespaces", "clusterkeycloakissuers", "clusterkeycloakissuers/status", "tokenreviews", "subjectaccessreviews"}, res) {
					t.Errorf("the namespace-scoped install's ClusterRole grants %s: only cluster-scoped objects belong there", res)
				}
			}
		}
	}
	// The Roles hold the generated rules except the cluster-scoped reviews.
	var want []string
	for _, r := range generatedRules(t) {
		if !strings.HasPrefix(r, "authentication.k8s.io/") && !strings.HasPrefix(r, "authorization.k8s.io/") {
			want = append(want, r)
		}
	}
	roleNS := map[string]bool{}
	for _, o := range find(rel, "Role") {
		if o.GetNamespace() == "ml-platform" {
			continue // leader election, and the cluster issuers' credentials
		}
		roleNS[o.GetNamespace()] = true
		if r := ruleSet(convert[rbacv1.Role](t, o).Rules); !reflect.DeepEqual(r, want) {
			t.Errorf("%s rules differ from config/rbac/role.yaml:\n got %v\nwant %v", key(o), r, want)
		}
	}
	bindingNS := map[string]bool{}
	for _, o := range find(rel, "RoleBinding") {
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

	d := deployment(t, rel)
	for _, a := range []string{"--leader-elect", "--namespaces=team-a,team-b", "--metrics-bind-address=:9090",
		"--zap-log-level=debug", "--zap-encoder=console", "--concurrency=8", "--keycloak-timeout=10s"} {
		if !hasArg(d, a) {
			t.Errorf("Deployment lacks %s (args %v)", a, d.Spec.Template.Spec.Containers[0].Args)
		}
	}
	if *d.Spec.Replicas != 3 {
		t.Errorf("replicas = %d, want 3", *d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if c.Image != "registry.example.com/ml/mlflow-token-operator@"+digest || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %s (%s), want the values' image pinned by digest, with pull policy Always", c.Image, c.ImagePullPolicy)
	}
	if !c.Resources.Limits.Cpu().Equal(resource.MustParse("1")) || !c.Resources.Requests.Memory().Equal(resource.MustParse("128Mi")) {
		t.Errorf("resources %v, want the values' resources", c.Resources)
	}
	if d.Spec.Template.Annotations["example.com/owner"] != "ml-platform" {
		t.Error("pod annotations are not applied")
	}
	if len(c.Env) != 3 || c.Env[0].Name != "POD_NAMESPACE" || c.Env[1].Name != "HTTPS_PROXY" || c.Env[2].Value != ".svc,.cluster.local" {
		t.Errorf("env %v, want POD_NAMESPACE and then extraEnv", c.Env)
	}
	if len(pod.Volumes) != 1 || pod.Volumes[0].ConfigMap == nil || len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/etc/corporate-ca" {
		t.Errorf("volumes %v, mounts %v: want extraVolumes and extraVolumeMounts", pod.Volumes, c.VolumeMounts)
	}
	if len(pod.TopologySpreadConstraints) != 1 || pod.TopologySpreadConstraints[0].LabelSelector == nil {
		t.Fatalf("topology spread constraints %v: want one, with a label selector filled in", pod.TopologySpreadConstraints)
	}
	for k, v := range pod.TopologySpreadConstraints[0].LabelSelector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("the topology spread constraint selects %s=%s, which the operator's pods do not carry", k, v)
		}
	}
	pdb := only(t, rel, "PodDisruptionBudget")
	if v, _, _ := unstructured.NestedFieldNoCopy(pdb.Object, "spec", "minAvailable"); fmt.Sprint(v) != "2" {
		t.Errorf("PodDisruptionBudget minAvailable %v, want 2", v)
	}
	if _, found, _ := unstructured.NestedFieldNoCopy(pdb.Object, "spec", "maxUnavailable"); found {
		t.Error("PodDisruptionBudget sets both minAvailable and maxUnavailable")
	}
	sel, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
	for k, v := range sel {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("the PodDisruptionBudget selects %s=%s, which the operator's pods do not carry", k, v)
		}
	}
	svc := convert[corev1.Service](t, only(t, rel, "Service"))
	if svc.Spec.Ports[0].Port != 9090 {
		t.Errorf("metrics Service port %d, want 9090", svc.Spec.Ports[0].Port)
	}
	if len(find(rel, "CustomResourceDefinition")) != len(generatedCRDs(t)) {
		t.Error("CRDs are missing from the rendering")
	}

	// The uninstall hook is namespace-scoped too: Roles in the watched namespaces only.
	hook := hookObjects(objs, "pre-delete")
	job := convert[batchv1.Job](t, only(t, hook, "Job"))
	checkUninstallJob(t, hook, job, "revoke", []string{"team-a", "team-b"})
	hookNS := map[string]bool{}
	for _, o := range find(hook, "Role") {
		hookNS[o.GetNamespace()] = true
	}
	if !reflect.DeepEqual(hookNS, map[string]bool{"team-a": true, "team-b": true}) {
		t.Errorf("uninstall hook Roles in %v, want team-a and team-b", hookNS)
	}
	if job.Spec.Template.Spec.Containers[0].Image != c.Image {
		t.Errorf("the uninstall hook runs %s, want the operator's image %s", job.Spec.Template.Spec.Containers[0].Image, c.Image)
	}

	c8s := apiServer(t)
	ensureNamespace(t, c8s, "team-a", nil)
	ensureNamespace(t, c8s, "team-b", nil)
	applyDryRun(t, rel)
	applyDryRun(t, hook)
	podSecurityAdmits(t, d, "psa-chart-custom")
}

// TestChartMetricsOffSingleReplica: metrics off removes the Service, the port, the helm test and
// turns the endpoint off; one replica with leaderElection.enabled=false runs without leader
// election and without its Role; no PodDisruptionBudget for one replica.
func TestChartMetricsOffSingleReplica(t *testing.T) {
	objs := helmTemplate(t, "mlflow-token-operator", "solo", `
replicas: 1
leaderElection: {enabled: false}
metrics: {enabled: false}
`)
	rel := releaseObjects(objs)
	if n := len(find(rel, "Service")); n != 0 {
		t.Errorf("metrics disabled, but %d Service(s) rendered", n)
	}
	d := deployment(t, rel)
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
	for _, o := range find(rel, "Role") {
		t.Errorf("unexpected %s without leader election or namespace scope", key(o))
	}
	if n := len(hookObjects(objs, "test")); n != 0 {
		t.Errorf("metrics disabled, but %d helm test object(s): the test probes the metrics endpoint", n)
	}
	if n := len(find(objs, "PodDisruptionBudget")); n != 0 {
		t.Errorf("one replica, but %d PodDisruptionBudget(s)", n)
	}
	applyDryRun(t, rel)
}

// TestChartUninstallHookOrphan: uninstall.revokeTokens=false stops the operator (its Deployment,
// by name) and only patches finalizers: no delete permission; uninstall.enabled=false renders no
// hook.
func TestChartUninstallHookOrphan(t *testing.T) {
	objs := helmTemplate(t, "mlflow-token-operator", "orphan", `uninstall: {revokeTokens: false, timeout: 90s}`)
	hook := hookObjects(objs, "pre-delete")
	job := convert[batchv1.Job](t, only(t, hook, "Job"))
	checkUninstallJob(t, hook, job, "orphan", nil)
	d := convert[appsv1.Deployment](t, only(t, objs, "Deployment"))
	args := job.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--operator-deployment=orphan/"+d.Name) || !slices.Contains(args, "--timeout=90s") {
		t.Errorf("orphan hook args %v: want --operator-deployment=orphan/%s and --timeout=90s", args, d.Name)
	}
	var tokenRules, stopRules []string
	for _, o := range find(hook, "ClusterRole") {
		tokenRules = append(tokenRules, ruleSet(convert[rbacv1.ClusterRole](t, o).Rules)...)
	}
	for _, o := range find(hook, "Role") {
		r := convert[rbacv1.Role](t, o)
		stopRules = append(stopRules, ruleSet(r.Rules)...)
		for _, rule := range r.Rules {
			if slices.Contains(rule.Resources, "deployments") && !reflect.DeepEqual(rule.ResourceNames, []string{d.Name}) {
				t.Errorf("the hook may touch deployments %v, want only the operator's %s", rule.ResourceNames, d.Name)
			}
		}
	}
	if slices.Contains(tokenRules, "auth.mlflow-token-operator.io/mlflowaccesstokens delete") || !slices.Contains(tokenRules, "auth.mlflow-token-operator.io/mlflowaccesstokens patch") {
		t.Errorf("orphan hook token rules %v: patch, never delete", tokenRules)
	}
	for _, r := range []string{"apps/deployments patch", "/pods list"} {
		if !slices.Contains(stopRules, r) {
			t.Errorf("orphan hook lacks %q to stop the operator (has %v)", r, stopRules)
		}
	}
	applyDryRun(t, hook)

	if n := len(hookObjects(helmTemplate(t, "x", "orphan", `uninstall: {enabled: false}`), "pre-delete")); n != 0 {
		t.Errorf("uninstall.enabled=false still renders %d hook object(s)", n)
	}
}

// TestChartCRDValues: crds.enabled=false renders no CRD; crds.keep=false drops the keep policy.
func TestChartCRDValues(t *testing.T) {
	if n := len(find(helmTemplate(t, "x", "crds", `crds: {enabled: false}`), "CustomResourceDefinition")); n != 0 {
		t.Errorf("crds.enabled=false still renders %d CRD(s)", n)
	}
	for _, crd := range find(helmTemplate(t, "x", "crds", `crds: {keep: false}`), "CustomResourceDefinition") {
		if _, ok := crd.GetAnnotations()["helm.sh/resource-policy"]; ok {
			t.Errorf("crds.keep=false still renders the keep policy on %s", crd.GetName())
		}
	}
}

// TestChartServiceMonitor: with metrics.serviceMonitor.enabled the chart adds a ServiceMonitor
// that selects the metrics Service, scrapes its named port, honours the per-token `namespace`
// label and names the job after the Service's app.kubernetes.io/name. (Not applied to the API
// server: its CRD belongs to the Prometheus Operator.)
func TestChartServiceMonitor(t *testing.T) {
	objs := helmTemplate(t, "mlflow-token-operator", "monitoring", `
metrics: {serviceMonitor: {enabled: true, interval: 15s, scrapeTimeout: 10s, labels: {release: kube-prometheus-stack}}}
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
	if ep["port"] != svc.Spec.Ports[0].Name || ep["honorLabels"] != true || ep["interval"] != "15s" || ep["scrapeTimeout"] != "10s" {
		t.Errorf("endpoint %v: want port %s, honorLabels true, interval 15s, scrapeTimeout 10s", ep, svc.Spec.Ports[0].Name)
	}
	if jl, _, _ := unstructured.NestedString(sm.Object, "spec", "jobLabel"); jl != "app.kubernetes.io/name" || svc.Labels[jl] != "mlflow-token-operator" {
		t.Errorf("jobLabel %q (Service label %q): want app.kubernetes.io/name, whose value mlflow-token-operator the alerts select", jl, svc.Labels[jl])
	}
	if sm.GetLabels()["release"] != "kube-prometheus-stack" {
		t.Error("serviceMonitor.labels are not applied")
	}
	var rest []*unstructured.Unstructured
	for _, o := range releaseObjects(objs) {
		if o.GetKind() != "ServiceMonitor" {
			rest = append(rest, o)
		}
	}
	applyDryRun(t, rest)

	if n := len(find(helmTemplate(t, "x", "monitoring", `metrics: {enabled: false, serviceMonitor: {enabled: true}}`), "ServiceMonitor")); n != 0 {
		t.Error("a ServiceMonitor is rendered although metrics are disabled")
	}
}

// TestChartCSIPodMonitor: with csiDriver.podMonitor.enabled the chart adds a PodMonitor that
// selects the node plugins' pods and scrapes their metrics port, keeping their namespace label;
// with metrics.secure it authenticates with the named Secret's token over HTTPS, and without the
// Secret's name it refuses to render, saying so.
func TestChartCSIPodMonitor(t *testing.T) {
	const csi = `csiDriver: {enabled: true, tokenAudiences: ["https://kc.example.com/realms/mlflow"], podMonitor: {enabled: true, interval: 20s, labels: {release: kps}, bearerTokenSecret: {name: scrape-token}}}`
	objs := helmTemplate(t, "mto", "monitoring", csi)
	pm := only(t, objs, "PodMonitor")
	ds := convert[appsv1.DaemonSet](t, only(t, objs, "DaemonSet"))
	sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	if len(sel) == 0 {
		t.Fatal("the PodMonitor selects every pod")
	}
	for k, v := range sel {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("the PodMonitor selects %s=%s, which the node plugin's pods do not carry", k, v)
		}
	}
	eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
	if len(eps) != 1 {
		t.Fatalf("want one endpoint, got %d", len(eps))
	}
	ep := eps[0].(map[string]any)
	ports := map[string]bool{}
	for _, p := range ds.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = true
	}
	if !ports[fmt.Sprint(ep["port"])] || ep["honorLabels"] != true || ep["interval"] != "20s" || ep["scheme"] != "https" {
		t.Errorf("endpoint %v: want a port of the plugin's container (%v), honorLabels, interval 20s, https", ep, ports)
	}
	if name, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "name"); name != "scrape-token" {
		t.Errorf("endpoint authorization %v: want the Secret scrape-token", ep["authorization"])
	}
	if pm.GetLabels()["release"] != "kps" || pm.GetNamespace() != "monitoring" {
		t.Errorf("PodMonitor labels %v in %q: want release=kps in monitoring", pm.GetLabels(), pm.GetNamespace())
	}

	plain := only(t, helmTemplate(t, "mto", "monitoring", csi+"\nmetrics: {secure: false}"), "PodMonitor")
	eps, _, _ = unstructured.NestedSlice(plain.Object, "spec", "podMetricsEndpoints")
	if ep := eps[0].(map[string]any); ep["scheme"] != nil || ep["authorization"] != nil {
		t.Errorf("plain-HTTP metrics: endpoint %v still has a scheme or a token", ep)
	}
	out, err := helmTemplateErr(t, "mto", "monitoring", strings.Replace(csi, "bearerTokenSecret: {name: scrape-token}", "bearerTokenSecret: {}", 1))
	if err == nil || !strings.Contains(err.Error(), "bearerTokenSecret.name is required") {
		t.Errorf("no Secret for the secure scrape: want a refusal that names bearerTokenSecret.name, got %v\n%s", err, out)
	}
	for _, values := range []string{
		`csiDriver: {podMonitor: {enabled: true, bearerTokenSecret: {name: s}}}`,
		csi + "\nmetrics: {enabled: false}",
	} {
		if n := len(find(helmTemplate(t, "mto", "monitoring", values), "PodMonitor")); n != 0 {
			t.Errorf("%s: a PodMonitor is rendered without node plugins or metrics", values)
		}
	}
}

// TestChartPrometheusRule: the chart's alerts are config/prometheus/rules.yaml's, with the
// operator's scrape target selected in the release namespace (or by operatorSelector).
func TestChartPrometheusRule(t *testing.T) {
	for _, c := range []struct{ values, selector string }{
		{`prometheusRule: {enabled: true, labels: {release: kube-prometheus-stack}}`, `job="mlflow-token-operator",namespace="monitoring"`},
		{`prometheusRule: {enabled: true, operatorSelector: 'job="kubernetes-pods",namespace="ops"'}`, `job="kubernetes-pods",namespace="ops"`},
	} {
		pr := only(t, helmTemplate(t, "mlflow-token-operator", "monitoring", c.values), "PrometheusRule")
		raw, err := yaml.Marshal(pr.Object)
		if err != nil {
			t.Fatal(err)
		}
		var got, want ruleFile
		if err := yaml.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(mustRead(t, "config/prometheus/rules.yaml"), &want); err != nil {
			t.Fatal(err)
		}
		replaced := 0
		for gi := range want.Spec.Groups {
			for ri := range want.Spec.Groups[gi].Rules {
				r := &want.Spec.Groups[gi].Rules[ri]
				if strings.Contains(r.Expr, `job="mlflow-token-operator"`) {
					replaced++
					r.Expr = strings.ReplaceAll(r.Expr, `job="mlflow-token-operator"`, c.selector)
				}
			}
		}
		if replaced < 2 {
			t.Errorf("only %d alerts select the operator's job: the absent and no-leader alerts should", replaced)
		}
		if !reflect.DeepEqual(got.Spec, want.Spec) {
			t.Errorf("%s: the chart's rules differ from config/prometheus/rules.yaml with the selector %s", c.values, c.selector)
		}
		if strings.Contains(c.values, "release") && pr.GetLabels()["release"] != "kube-prometheus-stack" {
			t.Error("prometheusRule.labels are not applied")
		}
	}
	if _, err := helmTemplateErr(t, "x", "monitoring", `{metrics: {enabled: false}, prometheusRule: {enabled: true}}`); err == nil || !strings.Contains(err.Error(), "prometheusRule.enabled needs metrics.enabled") {
		t.Errorf("alerts without metrics: got %v, want a clear error", err)
	}
}

// TestChartGrafanaDashboard: the dashboard ConfigMap holds config/grafana's JSON, labelled for
// the sidecar.
func TestChartGrafanaDashboard(t *testing.T) {
	cm := convert[corev1.ConfigMap](t, only(t, helmTemplate(t, "x", "ops", `
grafanaDashboard: {enabled: true, namespace: monitoring, labels: {grafana_dashboard: "1", team: ml}, annotations: {grafana_folder: MLflow}}
`), "ConfigMap"))
	want := strings.TrimSuffix(string(mustRead(t, "config/grafana/mlflow-token-operator.json")), "\n")
	if cm.Data["mlflow-token-operator.json"] != want {
		t.Error("the dashboard ConfigMap does not hold config/grafana/mlflow-token-operator.json verbatim")
	}
	if cm.Namespace != "monitoring" || cm.Labels["grafana_dashboard"] != "1" || cm.Labels["team"] != "ml" || cm.Annotations["grafana_folder"] != "MLflow" {
		t.Errorf("ConfigMap %s/%s labels %v annotations %v: want the values'", cm.Namespace, cm.Name, cm.Labels, cm.Annotations)
	}
	if n := len(find(helmTemplate(t, "x", "ops", ""), "ConfigMap")); n != 0 {
		t.Errorf("grafanaDashboard is off by default, but %d ConfigMap(s) rendered", n)
	}
}

// TestChartReadmeValuesTable: the README's values table is what hack/chartdoc generates from
// values.yaml, and every value is documented.
func TestChartReadmeValuesTable(t *testing.T) {
	if _, err := runErr(t, "go", "run", "./hack/chartdoc", "-check", chartDir); err != nil {
		t.Fatal(err)
	}
	readme := string(mustRead(t, chartDir+"/README.md"))
	for _, bad := range []string{"mlflowtokens ", "mlflowtokens`"} {
		if strings.Contains(readme, bad) {
			t.Errorf("the chart README uses %q: kubectl knows mlflowaccesstokens, mlflowtoken and mat", bad)
		}
	}
}

// TestChartGlobalValues: a parent chart's global.imageRegistry replaces the image's registry host
// (or prefixes a repository without one), and global.imagePullSecrets reach every pod of the
// chart, before its own; other global keys are accepted and ignored.
func TestChartGlobalValues(t *testing.T) {
	cases := []struct{ values, image string }{
		{`global: {imageRegistry: mirror.example.com, imagePullSecrets: [{name: parent}], other: 1}
imagePullSecrets: [{name: own}]
csiDriver: {enabled: true, tokenAudiences: ["https://kc.example.com/realms/mlflow"]}`, "mirror.example.com/mlflow-token-operator/mlflow-token-operator:"},
		{`global: {imageRegistry: "mirror.example.com:5000/"}
image: {repository: team/operator, tag: v9}`, "mirror.example.com:5000/team/operator:v9"},
		{`global: {}`, "ghcr.io/mlflow-token-operator/mlflow-token-operator:"},
	}
	for i, c := range cases {
		objs := helmTemplate(t, "x", "g", c.values)
		var pods []corev1.PodSpec
		for _, kind := range []string{"Deployment", "DaemonSet", "Job", "Pod"} {
			for _, o := range find(objs, kind) {
				spec, found, err := unstructured.NestedMap(o.Object, "spec", "template", "spec")
				if !found {
					spec, found, err = unstructured.NestedMap(o.Object, "spec")
				}
				if err != nil || !found {
					t.Fatalf("%s %s: no pod spec (%v)", kind, o.GetName(), err)
				}
				var ps corev1.PodSpec
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(spec, &ps); err != nil {
					t.Fatal(err)
				}
				pods = append(pods, ps)
			}
		}
		if len(pods) < 2 {
			t.Fatalf("case %d: %d pod specs rendered", i, len(pods))
		}
		for _, ps := range pods {
			for _, ctr := range ps.Containers {
				if strings.Contains(ctr.Image, "mlflow-token-operator") || strings.Contains(ctr.Image, "operator") {
					if !strings.HasPrefix(ctr.Image, c.image) {
						t.Errorf("case %d: container %s runs %s, want %s…", i, ctr.Name, ctr.Image, c.image)
					}
				}
			}
			if i == 0 {
				var names []string
				for _, s := range ps.ImagePullSecrets {
					names = append(names, s.Name)
				}
				if strings.Join(names, ",") != "parent,own" {
					t.Errorf("pull secrets %v, want parent,own", names)
				}
			}
		}
	}
}
