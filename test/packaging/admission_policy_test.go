package packaging

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestAdmissionPoliciesHoldTheOperator installs the chart's ValidatingAdmissionPolicies and the
// operator's RBAC in a real API server, and acts as the operator's ServiceAccount (impersonated):
// RBAC lets it patch any pod and update any Secret; the policies let it change only the nudge
// annotation of a pod and only Secrets that carry its label. (test/cluster checks the same on a
// real node, with the operator rotating and nudging under the policies.)
func TestAdmissionPoliciesHoldTheOperator(t *testing.T) {
	c := apiServer(t)
	ctx := context.Background()
	const release, ns, tenant = "vap", "mto-vap", "team-vap"
	objs := helmTemplate(t, release, ns, "crds: {enabled: false}\nuninstall: {enabled: false}\ntests: {enabled: false}\n")
	ensureNamespace(t, c, ns, nil)
	ensureNamespace(t, c, tenant, nil)
	for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"} {
		for _, o := range find(objs, kind) {
			if err := c.Create(ctx, o.DeepCopy()); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("creating %s: %v", key(o), err)
			}
			t.Cleanup(func() { _ = c.Delete(ctx, o.DeepCopy()) })
		}
	}
	sa := only(t, objs, "Deployment").Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["serviceAccountName"].(string)

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: "trainer", Labels: map[string]string{"app": "train"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "trainer:1"}}}}
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: "db-password"}, StringData: map[string]string{"password": "x"}}
	own := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: "train",
		Labels: map[string]string{"app.kubernetes.io/managed-by": "mlflow-token-operator"}}, StringData: map[string]string{"token": "x"}}
	for _, o := range []client.Object{pod, foreign, own} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + sa, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	op, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	patch := func(o client.Object, body string) error {
		return op.Patch(ctx, o, client.RawPatch(types.MergePatchType, []byte(body)))
	}
	// The operator writes Secrets with updates (it holds no patch on them).
	update := func(s *corev1.Secret, change func(*corev1.Secret)) error {
		cur := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(s), cur); err != nil {
			return err
		}
		change(cur)
		return op.Update(ctx, cur)
	}
	denied := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("%s: %v, want a denial by the admission policy", what, err)
		} else if !strings.Contains(err.Error(), "mlflow-token-operator may") {
			t.Errorf("%s: denied, but not by the policy: %v", what, err)
		}
	}
	// The policies take effect once the API server has loaded them: wait for the first denial.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := patch(pod.DeepCopy(), `{"metadata":{"labels":{"app":"other"}}}`)
		if err != nil || time.Now().After(deadline) {
			denied("a patch of a pod's labels", err)
			break
		}
		_ = c.Patch(ctx, pod.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"app":"train"}}}`)))
		time.Sleep(200 * time.Millisecond)
	}
	denied("a patch of a pod's image", patch(pod.DeepCopy(), `{"spec":{"containers":[{"name":"main","image":"evil:1"}]}}`))
	denied("a patch of another annotation", patch(pod.DeepCopy(), `{"metadata":{"annotations":{"other":"x"}}}`))
	denied("an update of a foreign Secret", update(foreign, func(s *corev1.Secret) { s.Data["password"] = []byte("xx") }))
	denied("labelling a foreign Secret as the operator's", update(foreign, func(s *corev1.Secret) {
		s.Labels = map[string]string{"app.kubernetes.io/managed-by": "mlflow-token-operator"}
	}))
	denied("a deletion of a foreign Secret", op.Delete(ctx, foreign.DeepCopy()))
	denied("removing the operator's label from its Secret", update(own, func(s *corev1.Secret) { delete(s.Labels, "app.kubernetes.io/managed-by") }))

	if err := patch(pod.DeepCopy(), `{"metadata":{"annotations":{"auth.mlflow-token-operator.io/token-rotated-at":"2026-12-06T12:00:00Z"}}}`); err != nil {
		t.Errorf("the nudge was denied: %v", err)
	}
	if err := update(own, func(s *corev1.Secret) { s.Data["token"] = []byte("y") }); err != nil {
		t.Errorf("an update of the operator's own Secret was denied: %v", err)
	}
	if err := op.Delete(ctx, own.DeepCopy()); err != nil {
		t.Errorf("a deletion of the operator's own Secret was denied: %v", err)
	}
	// Anyone else is untouched by the policies.
	if err := c.Patch(ctx, pod.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"app":"admin-was-here"}}}`))); err != nil {
		t.Errorf("the policies hold an administrator too: %v", err)
	}
}

// TestChartAdmissionPoliciesNeedTheirAPI: on a cluster older than 1.30 (no
// ValidatingAdmissionPolicy API) the chart leaves the policies out instead of failing the install.
func TestChartAdmissionPoliciesNeedTheirAPI(t *testing.T) {
	for _, c := range []struct {
		kube string
		some bool
	}{{"1.29.0", false}, {"1.30.0", true}} {
		out, err := helmTemplateErr(t, "x", "vap", "", "--kube-version", c.kube)
		if err != nil {
			t.Fatalf("helm template --kube-version %s: %v", c.kube, err)
		}
		objs := decodeObjects(t, out)
		n := len(find(objs, "ValidatingAdmissionPolicy")) + len(find(objs, "ValidatingAdmissionPolicyBinding"))
		if (n > 0) != c.some {
			t.Errorf("Kubernetes %s: %d policies and bindings rendered, want some: %v", c.kube, n, c.some)
		}
	}
}
