package csinode

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/scope"
)

// Lookup reads what the plugin may read from the API server: issuers, namespaces' labels and
// ConfigMaps (CA bundles). There is deliberately no way to read a Secret.
type Lookup interface {
	ClusterIssuer(ctx context.Context, name string) (*authv1alpha1.ClusterKeycloakIssuer, error)
	Issuer(ctx context.Context, namespace, name string) (*authv1alpha1.KeycloakIssuer, error)
	NamespaceLabels(ctx context.Context, name string) (map[string]string, error)
	ConfigMap(ctx context.Context, key types.NamespacedName) (*corev1.ConfigMap, error)
}

// target is where and as which client a volume's token is obtained.
type target struct {
	Endpoint    keycloak.Endpoint
	ClientID    string
	TrackingURI string
}

// resolve applies the issuer's scope rules to a volume, as the operator does for an
// MLflowAccessToken (internal/scope), and returns where to obtain its token. Every refusal is a
// gRPC status whose message names the cause; nothing has been asked of Keycloak then.
func (d *Driver) resolve(ctx context.Context, s Spec, pod Pod) (*target, error) {
	var (
		spec      authv1alpha1.KeycloakIssuerSpec
		st        authv1alpha1.KeycloakIssuerStatus
		credsNS   string
		allowHTTP bool
	)
	desc := s.IssuerKind + " " + s.IssuerName
	switch s.IssuerKind {
	case authv1alpha1.KindClusterKeycloakIssuer:
		iss, err := d.lookup.ClusterIssuer(ctx, s.IssuerName)
		if err != nil {
			return nil, lookupError(err, desc)
		}
		sel, rf := scope.NamespaceSelector(iss.Spec.NamespaceSelector)
		if rf != nil {
			return nil, refusal(codes.PermissionDenied, rf)
		}
		if !sel.Empty() {
			l, err := d.lookup.NamespaceLabels(ctx, pod.Namespace)
			if err != nil {
				return nil, lookupError(err, "namespace "+pod.Namespace)
			}
			if !sel.Matches(labels.Set(l)) {
				return nil, refusal(codes.PermissionDenied, scope.NotAdmitted(desc, pod.Namespace))
			}
		}
		spec, st, credsNS, allowHTTP = iss.Spec.KeycloakIssuerSpec, iss.Status, d.cfg.ClusterResourceNamespace, iss.Spec.AllowInsecureHTTP
	default:
		iss, err := d.lookup.Issuer(ctx, pod.Namespace, s.IssuerName)
		if err != nil {
			return nil, lookupError(err, desc+" in namespace "+pod.Namespace)
		}
		spec, st, credsNS = iss.Spec, iss.Status, pod.Namespace
	}
	if rf := scope.Ready(st, desc); rf != nil {
		return nil, refusal(codes.Unavailable, rf)
	}
	if spec.ClientAuth.ServiceAccount == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%s authenticates its client with a client secret (clientAuth.clientSecretRef); this driver authenticates as the pod's own ServiceAccount and reads no Secret: use an issuer with clientAuth.serviceAccount", desc)
	}
	t := &target{Endpoint: keycloak.Endpoint{URL: spec.URL, Realm: spec.Realm}, ClientID: s.ClientID}
	if t.ClientID == "" {
		t.ClientID = spec.ClientAuth.ClientID
	}
	if t.ClientID == "" {
		return nil, status.Errorf(codes.InvalidArgument, "%s names no client: set volumeAttributes.%s to the Keycloak client bound to %s", desc, AttrClientID, pod.Subject())
	}
	if rf := d.cfg.Guardrails.Check(spec.URL, allowHTTP, desc); rf != nil {
		return nil, refusal(codes.PermissionDenied, rf)
	}
	if spec.MLflow != nil {
		t.TrackingURI = spec.MLflow.TrackingURI
	}
	ca, err := d.caBundle(ctx, spec, credsNS, desc)
	if err != nil {
		return nil, err
	}
	t.Endpoint.CABundle = ca
	return t, nil
}

// caBundle reads an issuer's CA bundle from its ConfigMap (nil: the system's roots).
func (d *Driver) caBundle(ctx context.Context, spec authv1alpha1.KeycloakIssuerSpec, credsNS, desc string) ([]byte, error) {
	src := scope.IssuerCA(spec, credsNS)
	switch {
	case src == nil:
		return nil, nil
	case src.Kind == scope.KindSecret:
		return nil, status.Errorf(codes.FailedPrecondition, "%s takes its CA bundle from a Secret (ca.secretRef), and this driver reads no Secret: put the CA (public data) in a ConfigMap and use ca.configMapRef", desc)
	}
	cm, err := d.lookup.ConfigMap(ctx, src.NamespacedName)
	if err != nil {
		return nil, lookupError(err, fmt.Sprintf("ConfigMap %s/%s (the CA bundle of %s)", src.Namespace, src.Name, desc))
	}
	v, ok := cm.Data[src.Key]
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "ConfigMap %s/%s (the CA bundle of %s) has no key %q", src.Namespace, src.Name, desc, src.Key)
	}
	if rf := scope.CABundle([]byte(v), desc+" ca.configMapRef"); rf != nil {
		return nil, refusal(codes.FailedPrecondition, rf)
	}
	return []byte(v), nil
}

func refusal(code codes.Code, rf *scope.Refusal) error {
	return status.Errorf(code, "%s: %s", rf.Reason, rf.Message)
}

func lookupError(err error, what string) error {
	switch {
	case apierrors.IsNotFound(err):
		return status.Errorf(codes.NotFound, "%s does not exist", what)
	case apierrors.IsForbidden(err):
		return status.Errorf(codes.PermissionDenied, "the node plugin may not read %s: %v", what, err)
	}
	return status.Errorf(codes.Unavailable, "reading %s: %v", what, err)
}
