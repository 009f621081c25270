package cluster

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

// chartAdmissionPolicies acts as the installed operator's ServiceAccount on the node (impersonated)
// and checks that the chart's admission policies hold it to its job: RBAC lets it patch every pod
// and update every Secret, the policies let it change neither a pod's labels nor its image, nor a
// Secret that is not its own. (That the nudge and rotation still work is what the token and
// training-jobs steps show, with the policies in place.)
func chartAdmissionPolicies(t *testing.T) {
	ctx := context.Background()
	cfg := theNode.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + chartNS + ":" + deployment,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + chartNS, "system:authenticated"}}
	op, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pods := waitDeployment(t, chartNS, deployment, 1, time.Minute)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: chartNS, Name: pods[0].Name}}
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: teamNS, Name: "not-the-operators"}, StringData: map[string]string{"password": "x"}}
	if err := k8s.Create(ctx, foreign); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	denied := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "mlflow-token-operator may") {
			t.Errorf("%s as the operator: %v, want a denial by the chart's admission policy", what, err)
		}
	}
	// Strategic merge patches, as kubectl sends them: a container is merged by name, so that
	// changing its image is a valid pod update which only the policy can refuse.
	patch := func(o client.Object, body string) error {
		return op.Patch(ctx, o, client.RawPatch(types.StrategicMergePatchType, []byte(body)))
	}
	denied("patching a pod's labels", patch(pod, `{"metadata":{"labels":{"app.kubernetes.io/name":"hijacked"}}}`))
	denied("patching a pod's image", patch(pod, `{"spec":{"containers":[{"name":"manager","image":"evil:1"}]}}`))
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(foreign), s); err != nil {
		t.Fatal(err)
	}
	s.Data["password"] = []byte("changed")
	denied("updating a Secret that is not its own", op.Update(ctx, s))
	denied("deleting a Secret that is not its own", op.Delete(ctx, s))
	if err := patch(pod, `{"metadata":{"annotations":{"auth.mlflow-token-operator.io/token-rotated-at":"`+time.Now().UTC().Format(time.RFC3339)+`"}}}`); err != nil {
		t.Errorf("the nudge annotation as the operator: %v", err)
	}
}
