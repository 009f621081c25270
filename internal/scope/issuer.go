package scope

import (
	"cmp"
	"crypto/x509"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// NamespaceSelector parses a cluster issuer's namespace selector. An unset or empty selector
// admits every namespace (as cert-manager's ClusterIssuer): the returned selector is then Empty,
// and the caller need not read the namespace at all.
func NamespaceSelector(sel *metav1.LabelSelector) (labels.Selector, *Refusal) {
	if sel == nil {
		return labels.Everything(), nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, &Refusal{Reason: authv1alpha1.ReasonIssuerNotAllowed, Message: "the issuer's namespaceSelector is invalid: " + err.Error()}
	}
	return s, nil
}

// NotAdmitted is the refusal of a namespace that a cluster issuer's selector does not admit.
func NotAdmitted(issuer, namespace string) *Refusal {
	return &Refusal{Reason: authv1alpha1.ReasonIssuerNotAllowed, Message: fmt.Sprintf(
		"%s does not admit namespace %s (its namespaceSelector); ask the platform team, or use another issuer", issuer, namespace)}
}

// Ready refuses an issuer whose last check did not pass (its Ready condition): its realm did not
// answer, its URL is not allowed, or its credentials are missing. Nothing is asked of Keycloak
// for such an issuer.
func Ready(status authv1alpha1.KeycloakIssuerStatus, issuer string) *Refusal {
	ready := meta.FindStatusCondition(status.Conditions, authv1alpha1.ConditionReady)
	switch {
	case ready == nil:
		return &Refusal{Reason: authv1alpha1.ReasonIssuerNotReady, Message: issuer + " has not been checked yet"}
	case ready.Status != metav1.ConditionTrue:
		return &Refusal{Reason: authv1alpha1.ReasonIssuerNotReady, Message: fmt.Sprintf("%s is not ready (%s): %s", issuer, ready.Reason, ready.Message)}
	}
	return nil
}

// Kinds of object a CA bundle can come from.
const (
	KindConfigMap = "ConfigMap"
	KindSecret    = "Secret"
)

// CASource says where an issuer's CA bundle is: a key of a ConfigMap or of a Secret.
type CASource struct {
	Kind string // KindConfigMap or KindSecret
	types.NamespacedName
	Key string
}

// IssuerCA is where an issuer's CA bundle comes from (nil: the system's roots). credsNS is the
// namespace of the issuer's credentials: its own for a KeycloakIssuer, the operator's for a
// ClusterKeycloakIssuer.
func IssuerCA(spec authv1alpha1.KeycloakIssuerSpec, credsNS string) *CASource {
	switch ca := spec.CA; {
	case ca == nil:
		return nil
	case ca.ConfigMapRef != nil:
		return &CASource{KindConfigMap, types.NamespacedName{Namespace: credsNS, Name: ca.ConfigMapRef.Name}, cmp.Or(ca.ConfigMapRef.Key, "ca.crt")}
	case ca.SecretRef != nil:
		return &CASource{KindSecret, types.NamespacedName{Namespace: credsNS, Name: ca.SecretRef.Name}, cmp.Or(ca.SecretRef.Key, "ca.crt")}
	}
	return nil
}

// CABundle refuses a CA bundle that holds no PEM certificate; field names where it came from.
func CABundle(pemData []byte, field string) *Refusal {
	if !x509.NewCertPool().AppendCertsFromPEM(pemData) {
		return &Refusal{Reason: authv1alpha1.ReasonInvalidCABundle, Message: "the CA bundle (" + field + ") holds no PEM certificate"}
	}
	return nil
}
