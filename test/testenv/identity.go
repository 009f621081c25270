package testenv

import (
	"context"
	"os"
	"path/filepath"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

// OperatorIdentity returns a client config for a user bound only to the generated ClusterRole
// (config/rbac/role.yaml), as the Deployment's ServiceAccount is: every suite that runs the
// operator with it also proves the role is enough.
func OperatorIdentity(ctx context.Context, env *envtest.Environment, admin *rest.Config, user string) (*rest.Config, error) {
	role := &rbacv1.ClusterRole{}
	if err := ReadRepoYAML("config/rbac/role.yaml", role); err != nil {
		return nil, err
	}
	role.Name = user + "-role"
	c, err := client.New(admin, client.Options{})
	if err != nil {
		return nil, err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
	}
	u, err := env.AddUser(envtest.User{Name: user}, admin)
	if err != nil {
		return nil, err
	}
	return u.Config(), nil
}

// ReadRepoYAML decodes one YAML object of the repository (a path from its root) into o.
func ReadRepoYAML(rel string, o any) error {
	b, err := os.ReadFile(filepath.Join(RepoRoot(), rel))
	if err != nil {
		return err
	}
	return yaml.Unmarshal(b, o)
}
