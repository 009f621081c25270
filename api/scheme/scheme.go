// Package scheme builds the runtime.Scheme of the operator's API: the Kubernetes built-in types
// it reads and writes (Secrets, ConfigMaps, Pods, Events) and the auth.mlflow-token-operator.io
// types. It lives next to the API, not in the operator's wiring, so that clients (the kubectl
// plugin, tests, tools) can talk to the API without linking the operator.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// New returns a scheme with the Kubernetes built-in types and the operator's API types.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(authv1alpha1.AddToScheme(s))
	return s
}
