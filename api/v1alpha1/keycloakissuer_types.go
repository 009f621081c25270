package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The issuers hold what the platform owns: which Keycloak and realm, how to trust it, how its
// clients authenticate. MLflowAccessTokens reference one (spec.issuerRef) instead of repeating
// the URL, realm and CA, and without a client secret in every namespace. The names follow
// cert-manager's Issuer and ClusterIssuer, which platform engineers know: a KeycloakIssuer serves
// the tokens of its own namespace, a ClusterKeycloakIssuer those of every namespace its
// namespaceSelector admits. "Keycloak" in the name says what they connect to: a Keycloak realm.

// KeycloakIssuerSpec says which Keycloak realm issues tokens and how clients authenticate there.
type KeycloakIssuerSpec struct {
	// URL is Keycloak's base URL, for example https://keycloak.example.com (without /realms/...).
	// Use exactly the host name that MLflow's OIDC configuration uses: Keycloak writes the URL a
	// token was requested through into its `iss` claim. Plain http:// is refused unless the
	// platform allows it (operator flag --allow-insecure-http, or allowInsecureHTTP on a
	// ClusterKeycloakIssuer).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="url must be an absolute http:// or https:// URL such as https://keycloak.example.com"
	// +kubebuilder:validation:XValidation:rule="!self.contains('@')",message="url must not carry a user name or password (user:password@host): credentials belong in clientAuth"
	// +kubebuilder:validation:XValidation:rule="!self.contains('?') && !self.contains('#')",message="url must not carry a query or fragment"
	// +kubebuilder:validation:XValidation:rule="!self.contains('/realms/')",message="url must be Keycloak's base URL, without the /realms/<realm> path; put the realm in realm"
	URL string `json:"url"`

	// Realm is the Keycloak realm, for example "mlflow".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._-]*$`
	Realm string `json:"realm"`

	// CA is the PEM CA bundle that Keycloak's HTTPS certificate must chain to, for a Keycloak
	// behind a private CA (for example one that cert-manager's trust-manager distributes). Without
	// it the system's roots are used. Certificates are always verified.
	// +optional
	CA *CASource `json:"ca,omitempty"`

	// ClientAuth says how the issuer's clients authenticate to Keycloak.
	ClientAuth IssuerClientAuth `json:"clientAuth"`

	// MLflow holds MLflow settings for the tokens of this issuer (a token's own spec.mlflow wins).
	// +optional
	MLflow *MLflowSpec `json:"mlflow,omitempty"`
}

// CASource selects a PEM CA bundle: a key of a ConfigMap or of a Secret. For a KeycloakIssuer
// it is in the issuer's namespace; for a ClusterKeycloakIssuer in the operator's namespace.
// +kubebuilder:validation:XValidation:rule="has(self.configMapRef) != has(self.secretRef)",message="set exactly one of configMapRef or secretRef"
type CASource struct {
	// ConfigMapRef selects a key of a ConfigMap (default key ca.crt).
	// +optional
	ConfigMapRef *ConfigMapKeyRef `json:"configMapRef,omitempty"`
	// SecretRef selects a key of a Secret (default key ca.crt).
	// +optional
	SecretRef *CASecretKeyRef `json:"secretRef,omitempty"`
}

// CASecretKeyRef selects a key of a Secret holding a CA bundle.
type CASecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// Key within the Secret's data. Defaults to "ca.crt".
	// +optional
	// +kubebuilder:default=ca.crt
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// IssuerClientAuth says how clients authenticate to Keycloak: with a client secret the platform
// keeps (in the issuer's namespace, or the operator's for a ClusterKeycloakIssuer), or with a
// Kubernetes service-account token of a ServiceAccount in each token's own namespace (Keycloak's
// federated client authentication, "Signed JWT - Federated": no client secret anywhere).
// +kubebuilder:validation:XValidation:rule="has(self.clientSecretRef) != has(self.serviceAccount)",message="set exactly one of clientSecretRef (a client secret the platform keeps) or serviceAccount (Kubernetes service-account tokens, no secret)"
// +kubebuilder:validation:XValidation:rule="!has(self.clientSecretRef) || has(self.clientID)",message="clientID is required with clientSecretRef: the secret belongs to one client"
type IssuerClientAuth struct {
	// ClientID is the issuer's client. With serviceAccount it is the default for tokens that do
	// not name their own client (spec.clientID); with clientSecretRef it is the only client.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[\x21-\x7E]+$`
	ClientID string `json:"clientID,omitempty"`

	// ClientSecretRef points at the client's secret: in the issuer's namespace for a
	// KeycloakIssuer, in the operator's namespace for a ClusterKeycloakIssuer. Tenants never see it.
	// +optional
	ClientSecretRef *SecretKeyRef `json:"clientSecretRef,omitempty"`

	// ServiceAccount makes clients authenticate with a token of a Kubernetes ServiceAccount in the
	// MLflowAccessToken's own namespace, whose audience is the realm's issuer URL. Keycloak's
	// client must use the "Signed JWT - Federated" authenticator with the subject
	// system:serviceaccount:<namespace>:<name> (docs/keycloak-setup.md).
	// +optional
	ServiceAccount *ServiceAccountAuth `json:"serviceAccount,omitempty"`
}

// ServiceAccountAuth names the ServiceAccount whose tokens authenticate the client.
type ServiceAccountAuth struct {
	// Name of the ServiceAccount, in each MLflowAccessToken's own namespace (a token may name
	// another with spec.serviceAccountName). Never "default": Keycloak binds a client to exactly
	// one service account, and the default one is shared by every pod of the namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self != 'default'",message="the default ServiceAccount is shared by every pod of a namespace: name a ServiceAccount of its own"
	Name string `json:"name"`
}

// ClusterKeycloakIssuerSpec is a KeycloakIssuerSpec usable from many namespaces.
type ClusterKeycloakIssuerSpec struct {
	KeycloakIssuerSpec `json:",inline"`

	// NamespaceSelector says which namespaces' MLflowAccessTokens may use this issuer. Unset:
	// every namespace (as cert-manager's ClusterIssuer). An empty selector also selects all.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// AllowInsecureHTTP lets this issuer use a plain http:// URL: credentials and tokens then
	// cross the network in clear text. Only for a Keycloak reachable on a trusted network (a
	// sidecar, a node-local proxy). Only a cluster-scoped issuer can allow it: the platform decides.
	// +optional
	AllowInsecureHTTP bool `json:"allowInsecureHTTP,omitempty"`
}

// KeycloakIssuerStatus is the observed state of an issuer.
type KeycloakIssuerStatus struct {
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready (the realm's OIDC discovery answered, its issuer matches, the client
	// credentials are in place).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Issuer is the realm's issuer URL as its discovery document states it: the `iss` of its
	// tokens, which MLflow's OIDC_ISSUER must equal.
	// +optional
	Issuer string `json:"issuer,omitempty"`

	// LastCheckTime is when the realm was last checked.
	// +optional
	LastCheckTime *metav1.Time `json:"lastCheckTime,omitempty"`
}

// KeycloakIssuer is a Keycloak realm that issues the MLflowAccessTokens of its namespace.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=kcissuer,categories=mlflow
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Realm",type=string,JSONPath=`.spec.realm`
// +kubebuilder:printcolumn:name="Client",type=string,JSONPath=`.spec.clientAuth.clientID`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
type KeycloakIssuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec KeycloakIssuerSpec `json:"spec"`
	// Status is written by the operator (observedGeneration -1 until it first does: kstatus reads
	// a never-checked issuer as in progress).
	// +kubebuilder:default={"observedGeneration":-1}
	Status KeycloakIssuerStatus `json:"status,omitempty"`
}

// KeycloakIssuerList is a list of KeycloakIssuer.
//
// +kubebuilder:object:root=true
type KeycloakIssuerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KeycloakIssuer `json:"items"`
}

// ClusterKeycloakIssuer is a Keycloak realm that issues MLflowAccessTokens of many namespaces.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ckcissuer,categories=mlflow
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Realm",type=string,JSONPath=`.spec.realm`
// +kubebuilder:printcolumn:name="Client",type=string,JSONPath=`.spec.clientAuth.clientID`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
type ClusterKeycloakIssuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ClusterKeycloakIssuerSpec `json:"spec"`
	// Status is written by the operator (observedGeneration -1 until it first does).
	// +kubebuilder:default={"observedGeneration":-1}
	Status KeycloakIssuerStatus `json:"status,omitempty"`
}

// ClusterKeycloakIssuerList is a list of ClusterKeycloakIssuer.
//
// +kubebuilder:object:root=true
type ClusterKeycloakIssuerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterKeycloakIssuer `json:"items"`
}

// Issuer kinds, as spec.issuerRef.kind names them.
const (
	KindKeycloakIssuer        = "KeycloakIssuer"
	KindClusterKeycloakIssuer = "ClusterKeycloakIssuer"
)

func init() {
	SchemeBuilder.Register(&KeycloakIssuer{}, &KeycloakIssuerList{}, &ClusterKeycloakIssuer{}, &ClusterKeycloakIssuerList{})
}
