package packaging

import (
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestChartDelivery: the nudge of consumer pods is on by default, with its flags; turned off,
// the operator gets no access to pods at all, cluster-wide or per namespace.
func TestChartDelivery(t *testing.T) {
	podRules := func(rules []rbacv1.PolicyRule) []string {
		var out []string
		for _, r := range ruleSet(rules) {
			if strings.HasPrefix(r, "/pods ") {
				out = append(out, r)
			}
		}
		return out
	}

	rel := releaseObjects(helmTemplate(t, "mlflow-token-operator", "mlflow-token-operator-system", ""))
	d := deployment(t, rel)
	for _, a := range []string{"--nudge-consumer-pods=true", "--nudge-qps=20", "--nudge-burst=50", "--kubelet-sync-frequency=1m"} {
		if !hasArg(d, a) {
			t.Errorf("default Deployment lacks %s (args %v)", a, d.Spec.Template.Spec.Containers[0].Args)
		}
	}
	if got := podRules(convert[rbacv1.ClusterRole](t, managerRole(t, rel)).Rules); !slices.Equal(got, []string{"/pods list", "/pods patch", "/pods watch"}) {
		t.Errorf("default pod rules %v, want list, patch, watch", got)
	}

	off := releaseObjects(helmTemplate(t, "mlflow-token-operator", "mlflow-token-operator-system", `
delivery:
  nudge: {enabled: false, qps: 5, burst: 10}
  kubeletSyncFrequency: 20s
`))
	d = deployment(t, off)
	for _, a := range []string{"--nudge-consumer-pods=false", "--nudge-qps=5", "--nudge-burst=10", "--kubelet-sync-frequency=20s"} {
		if !hasArg(d, a) {
			t.Errorf("Deployment lacks %s (args %v)", a, d.Spec.Template.Spec.Containers[0].Args)
		}
	}
	role := convert[rbacv1.ClusterRole](t, managerRole(t, off))
	if got := podRules(role.Rules); len(got) != 0 {
		t.Errorf("nudging off, yet the ClusterRole grants %v", got)
	}
	// Everything else stays as generated.
	var want []string
	for _, r := range generatedRules(t) {
		if !strings.HasPrefix(r, "/pods ") {
			want = append(want, r)
		}
	}
	if got := ruleSet(role.Rules); !slices.Equal(got, want) {
		t.Errorf("nudging off: rules\n got %v\nwant %v", got, want)
	}

	scoped := releaseObjects(helmTemplate(t, "mlflow-token-operator", "mlflow-token-operator-system", `
watchNamespaces: [team-a]
delivery: {nudge: {enabled: false}}
`))
	managerRoles := 0
	for _, o := range find(scoped, "Role") {
		if o.GetNamespace() == "team-a" {
			managerRoles++
		}
		if got := podRules(convert[rbacv1.Role](t, o).Rules); len(got) != 0 {
			t.Errorf("nudging off, yet Role %s/%s grants %v", o.GetNamespace(), o.GetName(), got)
		}
	}
	if managerRoles != 1 {
		t.Errorf("%d Roles in the watched namespace team-a, want the manager's", managerRoles)
	}

	if _, err := helmTemplateErr(t, "x", "x", "delivery: {kubeletSyncFrequency: 1 minute}"); err == nil {
		t.Error("a kubeletSyncFrequency that is not a duration was accepted")
	}
}
