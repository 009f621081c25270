package csinode

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/objectwatch"
)

// APILookup reads from the API server through watches: issuers of both kinds and namespaces'
// metadata from informers (started on first use), CA ConfigMaps one watch each (objectwatch, as
// the operator reads them). A mount or rotation then costs no API request.
type APILookup struct {
	cache cache.Cache
	cms   *objectwatch.Store
}

// NewAPILookup reads through c (a manager's cache) and cms (a started objectwatch store).
func NewAPILookup(c cache.Cache, cms *objectwatch.Store) *APILookup {
	return &APILookup{cache: c, cms: cms}
}

// ClusterIssuer implements Lookup.
func (l *APILookup) ClusterIssuer(ctx context.Context, name string) (*authv1alpha1.ClusterKeycloakIssuer, error) {
	o := &authv1alpha1.ClusterKeycloakIssuer{}
	return o, l.cache.Get(ctx, client.ObjectKey{Name: name}, o)
}

// Issuer implements Lookup.
func (l *APILookup) Issuer(ctx context.Context, namespace, name string) (*authv1alpha1.KeycloakIssuer, error) {
	o := &authv1alpha1.KeycloakIssuer{}
	return o, l.cache.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, o)
}

// NamespaceLabels implements Lookup.
func (l *APILookup) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	n := &metav1.PartialObjectMetadata{}
	n.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := l.cache.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
		return nil, err
	}
	return n.GetLabels(), nil
}

// ConfigMap implements Lookup.
func (l *APILookup) ConfigMap(ctx context.Context, key types.NamespacedName) (*corev1.ConfigMap, error) {
	return l.cms.ConfigMap(ctx, key)
}
