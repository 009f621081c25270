package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

// operatorConfig returns a client config for a user bound only to the generated ClusterRole
// (config/rbac/role.yaml) and the leader-election/events Role's rules, as the Deployment's
// service account would be.
func operatorConfig(ctx context.Context, env *envtest.Environment, admin *rest.Config) (*rest.Config, error) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(raw, role); err != nil {
		return nil, err
	}
	role.Name = "mlflow-token-operator-test-role"
	if err := k8s.Create(ctx, role); err != nil {
		return nil, err
	}
	const user = "mlflow-token-operator"
	if err := k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "mlflow-token-operator-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}); err != nil {
		return nil, err
	}
	u, err := env.AddUser(envtest.User{Name: user}, admin)
	if err != nil {
		return nil, err
	}
	return u.Config(), nil
}

// The operator's identity really is restricted: envtest enforces RBAC.
func TestOperatorIdentityIsRestricted(t *testing.T) {
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
