package integration

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The operator's identity really is restricted: envtest enforces RBAC.
func TestOperatorIdentityIsRestricted(t *testing.T) {
	t.Parallel()
	c, err := client.New(restCfg, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.List(context.Background(), &appsv1.DeploymentList{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing deployments as the operator: %v, want Forbidden", err)
	}
	// Pods: listed and patched (the nudge of consumer pods), never deleted.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "any"}}
	if err := c.Delete(context.Background(), pod); !apierrors.IsForbidden(err) {
		t.Errorf("deleting a pod as the operator: %v, want Forbidden", err)
	}
	if err := c.List(context.Background(), &corev1.SecretList{}); err != nil {
		t.Errorf("listing secrets as the operator: %v", err)
	}
}
