package controllers

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/scope"
)

// target is where and as whom a resource's tokens are obtained: resolved from its inline
// keycloak or from its issuer. It names the credentials; inputs.go reads them.
type target struct {
	Endpoint keycloak.Endpoint
	ClientID string
	// Exactly one of secret and serviceAccount says how the client authenticates.
	secret         *secretRef
	serviceAccount *types.NamespacedName
	// ca is where the CA bundle comes from (zero: the system's roots).
	ca caRef
	// watched: the credentials and CA belong to an issuer and are read from the operator's
	// watches of them (no API request per rotation); otherwise they are the resource's own and
	// read uncached when needed.
	watched bool
	// allowHTTP: the platform allows this target's plain http:// URL.
	allowHTTP bool
	// TrackingURI is the MLflow tracking URI the issuer sets for its tokens ("" when none).
	TrackingURI string
	// issuer names the issuer for messages ("" for an inline keycloak).
	issuer string
}

// secretRef selects a key of a Secret (or ConfigMap); field names it in the spec, for messages.
type secretRef struct {
	types.NamespacedName
	Key   string
	field string
}

// caRef says where a CA bundle comes from: inline PEM, or a key of a ConfigMap or Secret.
type caRef struct {
	inline    string
	configMap *secretRef
	secret    *secretRef
	field     string // the spec field, for messages
}

// resolveTarget resolves obj's inline keycloak or issuer into a target, applying the platform's
// guardrails (plain http, allowed hosts, the cluster issuer's namespace selector). No request
// leaves the operator for a target the guardrails refuse.
func (r *MLflowAccessTokenReconciler) resolveTarget(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (*target, *failure) {
	var t *target
	var f *failure
	if obj.Spec.IssuerRef != nil {
		t, f = r.issuerTarget(ctx, obj)
	} else {
		t, f = inlineTarget(obj)
	}
	if f != nil {
		return nil, f
	}
	if f := checkURL(r.Guardrails, t.Endpoint.URL, t.allowHTTP, t.issuer); f != nil {
		return nil, f
	}
	return t, nil
}

func inlineTarget(obj *authv1alpha1.MLflowAccessToken) (*target, *failure) {
	k := obj.Spec.Keycloak
	if k == nil {
		return nil, &failure{Reason: authv1alpha1.ReasonIssuerNotFound, Message: "the resource names neither an issuer (spec.issuerRef) nor a Keycloak (spec.keycloak)"}
	}
	t := &target{Endpoint: keycloak.Endpoint{URL: k.URL, Realm: k.Realm}, ClientID: k.ClientID}
	switch {
	case k.ClientSecretRef != nil:
		t.secret = &secretRef{types.NamespacedName{Namespace: obj.Namespace, Name: k.ClientSecretRef.Name}, cmp.Or(k.ClientSecretRef.Key, "client-secret"), "keycloak.clientSecretRef"}
	default:
		t.serviceAccount = &types.NamespacedName{Namespace: obj.Namespace, Name: k.ServiceAccountName}
	}
	switch {
	case k.CABundle != "":
		t.ca = caRef{inline: k.CABundle, field: "keycloak.caBundle"}
	case k.CAConfigMapRef != nil:
		t.ca = caRef{configMap: &secretRef{types.NamespacedName{Namespace: obj.Namespace, Name: k.CAConfigMapRef.Name}, cmp.Or(k.CAConfigMapRef.Key, "ca.crt"), ""}, field: "keycloak.caConfigMapRef"}
	}
	return t, nil
}

// issuerTarget resolves spec.issuerRef: the issuer must exist, admit the resource's namespace
// and be Ready (its realm answered and its credentials are in place).
func (r *MLflowAccessTokenReconciler) issuerTarget(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (*target, *failure) {
	ref := obj.Spec.IssuerRef
	var (
		spec      authv1alpha1.KeycloakIssuerSpec
		status    authv1alpha1.KeycloakIssuerStatus
		credsNS   string
		allowHTTP bool
		desc      string
	)
	switch ref.Kind {
	case authv1alpha1.KindClusterKeycloakIssuer:
		iss := &authv1alpha1.ClusterKeycloakIssuer{}
		desc = "ClusterKeycloakIssuer " + ref.Name
		if err := r.Get(ctx, types.NamespacedName{Name: ref.Name}, iss); err != nil {
			return nil, issuerGetFailure(err, desc)
		}
		ok, f := r.namespaceAdmitted(ctx, obj.Namespace, iss.Spec.NamespaceSelector)
		if f != nil {
			return nil, f
		}
		if !ok {
			return nil, refused(scope.NotAdmitted(desc, obj.Namespace))
		}
		spec, status, credsNS, allowHTTP = iss.Spec.KeycloakIssuerSpec, iss.Status, r.ClusterResourceNamespace, iss.Spec.AllowInsecureHTTP
	default:
		iss := &authv1alpha1.KeycloakIssuer{}
		desc = "KeycloakIssuer " + ref.Name
		if err := r.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: ref.Name}, iss); err != nil {
			return nil, issuerGetFailure(err, desc)
		}
		spec, status, credsNS = iss.Spec, iss.Status, obj.Namespace
	}
	if f := refused(scope.Ready(status, desc)); f != nil {
		return nil, f
	}

	t := &target{Endpoint: keycloak.Endpoint{URL: spec.URL, Realm: spec.Realm}, ClientID: cmp.Or(obj.Spec.ClientID, spec.ClientAuth.ClientID),
		watched: true, allowHTTP: allowHTTP, issuer: desc}
	if spec.MLflow != nil {
		t.TrackingURI = spec.MLflow.TrackingURI
	}
	switch a := spec.ClientAuth; {
	case a.ClientSecretRef != nil:
		if obj.Spec.ClientID != "" && obj.Spec.ClientID != a.ClientID {
			return nil, &failure{Reason: authv1alpha1.ReasonIssuerNotAllowed, Message: fmt.Sprintf(
				"%s authenticates its own client %q with a secret the platform keeps; spec.clientID %q cannot use it", desc, a.ClientID, obj.Spec.ClientID)}
		}
		t.secret = issuerSecret(spec, credsNS, desc)
	case a.ServiceAccount != nil:
		// Always the resource's own namespace: a resource can only use the identity of its
		// namespace, so Keycloak's binding of a client to one service account is the tenancy.
		t.serviceAccount = &types.NamespacedName{Namespace: obj.Namespace, Name: cmp.Or(obj.Spec.ServiceAccountName, a.ServiceAccount.Name)}
	}
	if t.ClientID == "" {
		return nil, &failure{Reason: authv1alpha1.ReasonIssuerNotAllowed, Message: desc + " names no client: set spec.clientID"}
	}
	t.ca = issuerCA(spec, credsNS, desc)
	return t, nil
}

// issuerCA is where an issuer's CA bundle comes from.
func issuerCA(spec authv1alpha1.KeycloakIssuerSpec, credsNS, desc string) caRef {
	switch src := scope.IssuerCA(spec, credsNS); {
	case src == nil:
		return caRef{}
	case src.Kind == scope.KindConfigMap:
		return caRef{configMap: &secretRef{src.NamespacedName, src.Key, ""}, field: desc + " ca.configMapRef"}
	default:
		return caRef{secret: &secretRef{src.NamespacedName, src.Key, ""}, field: desc + " ca.secretRef"}
	}
}

// issuerSecret is where an issuer's client secret comes from (nil: it uses service accounts).
func issuerSecret(spec authv1alpha1.KeycloakIssuerSpec, credsNS, desc string) *secretRef {
	a := spec.ClientAuth
	if a.ClientSecretRef == nil {
		return nil
	}
	return &secretRef{types.NamespacedName{Namespace: credsNS, Name: a.ClientSecretRef.Name}, cmp.Or(a.ClientSecretRef.Key, "client-secret"), desc + " clientAuth.clientSecretRef"}
}

func issuerGetFailure(err error, desc string) *failure {
	if apierrors.IsNotFound(err) {
		return &failure{Reason: authv1alpha1.ReasonIssuerNotFound, Err: err, Message: desc + " does not exist"}
	}
	return asFailure(err)
}

// namespaceAdmitted reports whether a cluster issuer's namespace selector admits ns.
func (r *MLflowAccessTokenReconciler) namespaceAdmitted(ctx context.Context, ns string, sel *metav1.LabelSelector) (bool, *failure) {
	s, rf := scope.NamespaceSelector(sel)
	if rf != nil {
		return false, refused(rf)
	}
	if s.Empty() {
		return true, nil
	}
	n, f := r.namespace(ctx, ns)
	if f != nil {
		return false, f
	}
	return s.Matches(labels.Set(n.GetLabels())), nil
}

// namespace reads a namespace's metadata from the cache.
func (r *MLflowAccessTokenReconciler) namespace(ctx context.Context, name string) (*metav1.PartialObjectMetadata, *failure) {
	n := &metav1.PartialObjectMetadata{}
	n.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
		return nil, asFailure(err)
	}
	return n, nil
}

// inputsHash identifies what shapes the token: the Keycloak, realm, client and its credentials'
// source, the grant and scopes. A change to any of them makes the operator obtain a new token
// even when the current one is not due. (For an inline keycloak with a client secret it is the
// same hash as before issuers existed, so an upgrade re-issues nothing.)
func inputsHash(obj *authv1alpha1.MLflowAccessToken, t *target) string {
	sc := slices.Clone(obj.Spec.Grant.Scopes)
	slices.Sort(sc)
	credName, credKey := "", ""
	switch {
	case t.secret != nil && !t.watched:
		credName, credKey = t.secret.Name, t.secret.Key
	case t.secret != nil:
		credName, credKey = t.issuer+"/"+t.secret.Namespace+"/"+t.secret.Name, t.secret.Key
	case t.serviceAccount != nil:
		credName = "serviceaccount:" + t.serviceAccount.Name
	}
	b, _ := json.Marshal([]any{t.Endpoint.URL, t.Endpoint.Realm, t.ClientID, credName, credKey, obj.Spec.Grant.Type, sc})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
