package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GrantType names the OAuth 2.0 grant the operator uses to obtain tokens.
// +kubebuilder:validation:Enum=ClientCredentials;RefreshToken;Password
type GrantType string

const (
	// GrantClientCredentials obtains tokens for the client's own service account
	// (the `service-account-<clientID>` user in Keycloak).
	GrantClientCredentials GrantType = "ClientCredentials"
	// GrantRefreshToken redeems a refresh or offline token that a person bootstrapped once; the
	// operator then keeps the rotating refresh token in its own state Secret.
	GrantRefreshToken GrantType = "RefreshToken"
	// GrantPassword logs in with a user name and password once, then lives on refresh tokens,
	// logging in again only when the refresh chain ends.
	GrantPassword GrantType = "Password"
)

// MLflowAccessTokenSpec says where to get a token and where to put it.
// The duration rules apply only to values that are durations at all: for anything else the
// pattern's message is the one a person needs (CEL's own would be a type conversion error).
// +kubebuilder:validation:XValidation:rule="!has(self.renewBefore) || !self.renewBefore.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.renewBefore) > duration('0s')",message="renewBefore must be a positive duration such as 90s or 2m"
// +kubebuilder:validation:XValidation:rule="!has(self.renewBefore) || !self.renewBefore.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.renewBefore) <= duration('8760h')",message="renewBefore must not exceed 8760h (one year)"
// +kubebuilder:validation:XValidation:rule="!has(self.secretName) || !self.secretName.endsWith('-refresh-state')",message="secretName must not end with -refresh-state: that name is reserved for the operator's state Secret"
// +kubebuilder:validation:XValidation:rule="has(self.keycloak) != has(self.issuerRef)",message="set exactly one of issuerRef (a KeycloakIssuer or ClusterKeycloakIssuer the platform keeps) or keycloak (an inline Keycloak, for one-off use)"
// +kubebuilder:validation:XValidation:rule="!has(self.clientID) || has(self.issuerRef)",message="clientID names the client at an issuer (issuerRef); with an inline keycloak, set keycloak.clientID"
// +kubebuilder:validation:XValidation:rule="!has(self.serviceAccountName) || has(self.issuerRef)",message="serviceAccountName goes with an issuer that authenticates with service accounts (issuerRef); with an inline keycloak, set keycloak.serviceAccountName"
type MLflowAccessTokenSpec struct {
	// IssuerRef names the KeycloakIssuer (in this namespace) or ClusterKeycloakIssuer that issues
	// the token: the Keycloak, realm, trust and client authentication the platform keeps. Set
	// this or keycloak.
	// +optional
	IssuerRef *IssuerRef `json:"issuerRef,omitempty"`

	// ClientID is the Keycloak client of this token at its issuer, when the issuer authenticates
	// clients with service accounts and each namespace has its own client (default: the issuer's
	// clientAuth.clientID).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[\x21-\x7E]+$`
	ClientID string `json:"clientID,omitempty"`

	// ServiceAccountName is the ServiceAccount of this namespace whose tokens authenticate the
	// client, when the issuer authenticates clients with service accounts (default: the
	// issuer's clientAuth.serviceAccount.name).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// Keycloak says which Keycloak, realm and client issue the token, inline: for one-off use.
	// Platforms that run this operator for many teams use issuerRef instead. Set this or
	// issuerRef.
	// +optional
	Keycloak *KeycloakSpec `json:"keycloak,omitempty"`

	// Grant says how the token is obtained.
	Grant GrantSpec `json:"grant"`

	// SecretName is the name of the Secret, in the resource's namespace, that receives the
	// token. Defaults to the resource's name. The operator creates and owns this Secret;
	// if a Secret of that name exists and is not owned by this resource, the operator
	// refuses to touch it and reports a SecretConflict.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SecretName string `json:"secretName,omitempty"`

	// SecretTemplate holds labels and annotations to put on the Secret. The resource's own
	// labels and annotations are never copied to the Secret.
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`

	// RenewBefore is how long before the token expires it is renewed, for example "2m".
	// When unset, the token is renewed after two thirds of its lifetime. In both cases a random
	// jitter of up to a tenth of the lifetime is subtracted so that many tokens issued together
	// do not all renew in the same second, and renewal never happens later than a few seconds
	// before expiry. A value not shorter than the token's lifetime renews after a third of it.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`

	// MLflow holds optional MLflow settings written into the Secret for the consumer's convenience.
	// +optional
	MLflow *MLflowSpec `json:"mlflow,omitempty"`

	// Revocation tunes what deletion does at Keycloak.
	// +optional
	Revocation *RevocationSpec `json:"revocation,omitempty"`
}

// RevocationSpec tunes revocation on deletion.
type RevocationSpec struct {
	// VerifySessionWithAdminAPI makes deletion also check, through Keycloak's admin API, that the
	// token's session is gone, and delete it if not. The admin API is called with a token of the
	// client's own service account, which then needs the realm-management roles view-users and
	// manage-users. The operator flag --verify-session-revocation turns this on for all resources.
	// +optional
	VerifySessionWithAdminAPI bool `json:"verifySessionWithAdminAPI,omitempty"`
	// RevokeSuperseded revokes the previous access token after each rotation, once the consumers
	// have had time to read the new one (supersededGracePeriod). Without it a rotated-away token
	// stays valid until it expires (up to a third of its lifetime after the rotation). Services
	// that ask Keycloak about each token (introspection, userinfo) refuse it at once; MLflow with
	// mlflow-oidc-auth validates tokens locally and accepts it until it expires either way.
	// +optional
	RevokeSuperseded bool `json:"revokeSuperseded,omitempty"`
	// SupersededGracePeriod is how long after a rotation the previous token is revoked
	// (revokeSuperseded). Default: the time the consumers may need to receive a new token, as the
	// DeliveryAtRisk condition computes it (about 5 s for pods the operator nudges, 1.5 times the
	// kubelet's sync period, 90 s by default, for the others).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('1h')",message="supersededGracePeriod must be between 0s and 1h"
	SupersededGracePeriod *metav1.Duration `json:"supersededGracePeriod,omitempty"`
}

// IssuerRef names an issuer.
type IssuerRef struct {
	// Kind is KeycloakIssuer (in the token's namespace, the default) or ClusterKeycloakIssuer.
	// +optional
	// +kubebuilder:default=KeycloakIssuer
	// +kubebuilder:validation:Enum=KeycloakIssuer;ClusterKeycloakIssuer
	Kind string `json:"kind,omitempty"`
	// Name of the issuer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// KeycloakSpec names the Keycloak realm and client.
// +kubebuilder:validation:XValidation:rule="!(has(self.caBundle) && has(self.caConfigMapRef))",message="set caBundle or caConfigMapRef, not both"
// +kubebuilder:validation:XValidation:rule="has(self.clientSecretRef) != has(self.serviceAccountName)",message="set exactly one of clientSecretRef (a client secret) or serviceAccountName (Kubernetes service-account tokens, no secret)"
type KeycloakSpec struct {
	// URL is Keycloak's base URL, for example https://keycloak.example.com (without /realms/...).
	// Use exactly the host name that MLflow's OIDC configuration uses: Keycloak writes the
	// URL a token was requested through into its `iss` claim.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// Plain http:// is refused unless the platform allows it (operator flag --allow-insecure-http).
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="url must be an absolute http:// or https:// URL such as https://keycloak.example.com"
	// +kubebuilder:validation:XValidation:rule="!self.contains('@')",message="url must not carry a user name or password (user:password@host): the client's credentials go in clientSecretRef"
	// +kubebuilder:validation:XValidation:rule="!self.contains('/realms/')",message="url must be Keycloak's base URL, without the /realms/<realm> path; put the realm in keycloak.realm"
	// +kubebuilder:validation:XValidation:rule="!self.contains('?') && !self.contains('#')",message="url must not carry a query or fragment"
	URL string `json:"url"`

	// Realm is the Keycloak realm, for example "mlflow".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._-]*$`
	Realm string `json:"realm"`

	// ClientID is the OIDC client the token is requested for. For the ClientCredentials grant it
	// must be a confidential client with service accounts enabled.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[\x21-\x7E]+$`
	ClientID string `json:"clientID"`

	// ClientSecretRef points at the client's secret in a Secret of the resource's own namespace.
	// There is no namespace field on purpose: a resource can only read Secrets of its namespace.
	// Set this or serviceAccountName.
	// +optional
	ClientSecretRef *SecretKeyRef `json:"clientSecretRef,omitempty"`

	// ServiceAccountName makes the client authenticate with a token of this ServiceAccount of the
	// resource's namespace (Keycloak's federated client authentication, no client secret). Set
	// this or clientSecretRef.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self != 'default'",message="the default ServiceAccount is shared by every pod of a namespace: name a ServiceAccount of its own"
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// CABundle is a PEM bundle of the CAs that Keycloak's HTTPS certificate must chain to, for a
	// Keycloak behind a private CA. Without it (and without caConfigMapRef) the system's roots
	// are used. Certificates are always verified.
	// +optional
	// +kubebuilder:validation:MaxLength=262144
	// +kubebuilder:validation:XValidation:rule="self.contains('-----BEGIN CERTIFICATE-----')",message="caBundle must be PEM: one or more -----BEGIN CERTIFICATE----- blocks"
	CABundle string `json:"caBundle,omitempty"`

	// CAConfigMapRef points at a PEM CA bundle in a ConfigMap of the resource's namespace (for
	// example one that cert-manager's trust-manager fills), instead of caBundle.
	// +optional
	CAConfigMapRef *ConfigMapKeyRef `json:"caConfigMapRef,omitempty"`
}

// ConfigMapKeyRef selects a key of a ConfigMap in the same namespace as the resource.
type ConfigMapKeyRef struct {
	// Name of the ConfigMap.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key within the ConfigMap's data. Defaults to "ca.crt".
	// +optional
	// +kubebuilder:default=ca.crt
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// SecretKeyRef selects a key of a Secret in the same namespace as the resource.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key within the Secret's data. Defaults to "client-secret".
	// +optional
	// +kubebuilder:default=client-secret
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// RefreshTokenRef selects the bootstrap refresh or offline token in a Secret of the same namespace.
type RefreshTokenRef struct {
	// Name of the Secret. The operator reads it and never modifies or deletes it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key within the Secret's data. Defaults to "refresh-token".
	// +optional
	// +kubebuilder:default=refresh-token
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// UserCredentialsRef selects a user name and password in a Secret of the same namespace.
type UserCredentialsRef struct {
	// Name of the Secret. The operator reads it and never modifies or deletes it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// UsernameKey is the key holding the user name. Defaults to "username".
	// +optional
	// +kubebuilder:default=username
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	UsernameKey string `json:"usernameKey,omitempty"`

	// PasswordKey is the key holding the password. Defaults to "password".
	// +optional
	// +kubebuilder:default=password
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	PasswordKey string `json:"passwordKey,omitempty"`
}

// GrantSpec says how the token is obtained.
// +kubebuilder:validation:XValidation:rule="self.type == 'RefreshToken' ? has(self.refreshTokenSecretRef) : !has(self.refreshTokenSecretRef)",message="refreshTokenSecretRef is required for type RefreshToken and not allowed for other types"
// +kubebuilder:validation:XValidation:rule="self.type == 'Password' ? has(self.passwordSecretRef) : !has(self.passwordSecretRef)",message="passwordSecretRef is required for type Password and not allowed for other types"
// +kubebuilder:validation:XValidation:rule="!has(self.offline) || !self.offline || self.type == 'Password'",message="offline is only meaningful for type Password (a RefreshToken grant keeps the kind of token it was bootstrapped with)"
type GrantSpec struct {
	// Type is the OAuth 2.0 grant. ClientCredentials: the client's own service account.
	// RefreshToken: a refresh or offline token bootstrapped once by a person.
	// Password: a user's name and password (resource owner password credentials).
	Type GrantType `json:"type"`

	// RefreshTokenSecretRef points at the bootstrap refresh or offline token (type RefreshToken).
	// After the first redemption the operator keeps the rotating refresh token in its own state
	// Secret; put a new token here to re-bootstrap a chain that ended.
	// +optional
	RefreshTokenSecretRef *RefreshTokenRef `json:"refreshTokenSecretRef,omitempty"`

	// PasswordSecretRef points at the user name and password (type Password).
	// +optional
	PasswordSecretRef *UserCredentialsRef `json:"passwordSecretRef,omitempty"`

	// Offline requests an offline token (scope offline_access) for type Password: a session
	// that survives Keycloak's SSO session limits, ended only by revocation or the realm's
	// offline idle timeout. The user needs the realm role offline_access.
	// +optional
	Offline bool `json:"offline,omitempty"`

	// Scopes are extra scopes to request, for example ["openid"]. Each is a single scope token.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^[\x21\x23-\x5B\x5D-\x7E]+$`
	Scopes []string `json:"scopes,omitempty"`
}

// SecretTemplate holds metadata for the generated Secret. Admission checks keys and values the
// way the API server will check them on the Secret, so that a template that could never be
// written is refused here rather than at every renewal.
type SecretTemplate struct {
	// Labels to put on the Secret. The operator's own managed-by label always wins. Keys are
	// [prefix/]name (a DNS subdomain prefix, a name of at most 63 characters: alphanumerics, '-',
	// '_', '.'); values at most 63 such characters, beginning and ending alphanumeric.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="label keys must be [prefix/]name: an optional DNS subdomain prefix and a name of at most 63 alphanumerics, '-', '_' or '.', beginning and ending alphanumeric (for example team or example.com/team)"
	// +kubebuilder:validation:XValidation:rule="!self.exists(k, k.startsWith('auth.mlflow-token-operator.io/'))",message="keys under auth.mlflow-token-operator.io/ are reserved for the operator"
	Labels map[string]LabelValue `json:"labels,omitempty"`

	// Annotations to put on the Secret. Keys are [prefix/]name as for labels; values are free.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="annotation keys must be [prefix/]name: an optional DNS subdomain prefix and a name of at most 63 alphanumerics, '-', '_' or '.', beginning and ending alphanumeric"
	// +kubebuilder:validation:XValidation:rule="!self.exists(k, k.startsWith('auth.mlflow-token-operator.io/'))",message="keys under auth.mlflow-token-operator.io/ are reserved for the operator"
	Annotations map[string]string `json:"annotations,omitempty"`
}

// LabelValue is the value of a label: at most 63 alphanumerics, '-', '_' or '.', beginning and
// ending alphanumeric (or empty). A type of its own so that the schema can bound it without a CEL
// rule over every value of the map (whose estimated cost the API server refuses).
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`
type LabelValue string

// MLflowSpec holds MLflow settings for the consumer.
type MLflowSpec struct {
	// TrackingURI is written into the Secret as MLFLOW_TRACKING_URI.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https']",message="trackingURI must be an absolute http:// or https:// URL such as https://mlflow.example.com"
	// +kubebuilder:validation:XValidation:rule="!self.contains('@')",message="trackingURI must not carry a user name or password (user:password@host): MLflow is called with the token"
	// +kubebuilder:validation:XValidation:rule="!self.contains('?') && !self.contains('#')",message="trackingURI must not carry a query or fragment"
	TrackingURI string `json:"trackingURI,omitempty"`
}

// TokenInfo holds non-secret facts read from the current access token, to help debug a 401
// from MLflow (wrong user, missing audience, missing scope). It never holds token material.
type TokenInfo struct {
	// ID is the token's `jti` claim (an identifier, not the token).
	// +optional
	ID string `json:"id,omitempty"`
	// Issuer is the `iss` claim. MLflow's OIDC_ISSUER must equal it exactly.
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// Subject is the `sub` claim.
	// +optional
	Subject string `json:"subject,omitempty"`
	// PreferredUsername is the `preferred_username` claim; mlflow-oidc-auth uses it as the
	// MLflow user name when the token has no email.
	// +optional
	PreferredUsername string `json:"preferredUsername,omitempty"`
	// AuthorizedParty is the `azp` claim: the client the token was issued to.
	// +optional
	AuthorizedParty string `json:"authorizedParty,omitempty"`
	// Audience is the `aud` claim. MLflow's OIDC_AUDIENCE must be one of these.
	// +optional
	// +listType=atomic
	Audience []string `json:"audience,omitempty"`
	// Scope is the granted scope, as Keycloak returned it.
	// +optional
	Scope string `json:"scope,omitempty"`
	// Groups is the `groups` claim, when the client has a group-membership mapper.
	// +optional
	// +listType=atomic
	Groups []string `json:"groups,omitempty"`
}

// FailureKind says whether a failure can pass on its own.
// +kubebuilder:validation:Enum=Transient;NeedsChange
type FailureKind string

// Failure kinds.
const (
	FailureTransient   FailureKind = "Transient"
	FailureNeedsChange FailureKind = "NeedsChange"
)

// FailureStage is what a failed attempt was doing.
// +kubebuilder:validation:Enum=Target;SecretWrite;Issue;Revocation
type FailureStage string

// Failure stages.
const (
	StageTarget      FailureStage = "Target"
	StageSecretWrite FailureStage = "SecretWrite"
	StageIssue       FailureStage = "Issue"
	StageRevocation  FailureStage = "Revocation"
)

// MLflowAccessTokenStatus is the observed state. It never holds token material.
type MLflowAccessTokenStatus struct {
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready (a valid token is in the Secret) and RenewalFailing (the last
	// attempt to obtain a token failed; see its reason).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// SecretName is the Secret the current token was written to.
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// IssuedAt is when the current token was obtained.
	// +optional
	IssuedAt *metav1.Time `json:"issuedAt,omitempty"`

	// ExpiresAt is when the current token expires.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// SecretOverwrittenAt is when the operator first found the Secret's content changed by someone
	// else (events SecretModified, SecretRestored) in the current minute. A fourth change within
	// that minute makes the Secret contested (reason SecretContested): the operator then waits
	// instead of issuing another token.
	// +optional
	SecretOverwrittenAt *metav1.Time `json:"secretOverwrittenAt,omitempty"`
	// SecretOverwrites is how many times since secretOverwrittenAt the operator issued a new token
	// because someone else changed the Secret's content.
	// +optional
	SecretOverwrites int32 `json:"secretOverwrites,omitempty"`

	// RenewalTime is when the operator will next try to obtain a token: the scheduled renewal,
	// or after a failure the next retry.
	// +optional
	RenewalTime *metav1.Time `json:"renewalTime,omitempty"`

	// Rotations counts the tokens written to the Secret over the resource's life.
	// +optional
	Rotations int64 `json:"rotations,omitempty"`

	// FailedAttempts counts consecutive failed attempts; 0 after a success.
	// +optional
	FailedAttempts int32 `json:"failedAttempts,omitempty"`

	// LastFailureTime is when the last attempt failed.
	// +optional
	LastFailureTime *metav1.Time `json:"lastFailureTime,omitempty"`

	// LastFailureGeneration is the spec generation the failed attempts were made for: a newer
	// spec is tried at once, without the backoff.
	// +optional
	LastFailureGeneration int64 `json:"lastFailureGeneration,omitempty"`

	// LastFailureKind says whether the last failure can pass on its own (Transient: Keycloak down
	// or slow, a 5xx) or only a change can fix it (NeedsChange: wrong credentials, a missing
	// Secret); it sets the backoff and the Stalled condition.
	// +optional
	LastFailureKind FailureKind `json:"lastFailureKind,omitempty"`

	// LastFailureStage is what the last failed attempt was doing: resolving the issuer and the
	// guardrails (Target), writing the Secret (SecretWrite), obtaining the token (Issue), revoking
	// at deletion (Revocation).
	// +optional
	LastFailureStage FailureStage `json:"lastFailureStage,omitempty"`

	// Token holds non-secret facts from the current access token.
	// +optional
	Token *TokenInfo `json:"token,omitempty"`

	// SessionID is the Keycloak session behind the token (RefreshToken and Password grants, and
	// client credentials when the client issues refresh tokens).
	// +optional
	SessionID string `json:"sessionID,omitempty"`

	// OfflineSession is true when the session is an offline session.
	// +optional
	OfflineSession bool `json:"offlineSession,omitempty"`

	// LastRenewalRequest is the value of the renew-requested-at annotation the operator last
	// honoured (a manual rotation).
	// +optional
	LastRenewalRequest string `json:"lastRenewalRequest,omitempty"`

	// LastRevocationRequest is the value of the revoke-requested-at annotation the operator last
	// honoured (the token then in the Secret was revoked and replaced).
	// +optional
	LastRevocationRequest string `json:"lastRevocationRequest,omitempty"`

	// RefreshChainExpiresAt is when the refresh chain ends unless renewed in time: the refresh
	// token's expiry, or for offline tokens without a maximum, the realm's offline idle timeout
	// counted from the last refresh (operator flag --offline-idle-timeout). After it, a
	// RefreshToken grant needs a new bootstrap token and a Password grant logs in again.
	// +optional
	RefreshChainExpiresAt *metav1.Time `json:"refreshChainExpiresAt,omitempty"`

	// Consumers: how the current token reached the labelled pods that mount the Secret.
	// +optional
	Consumers *ConsumersStatus `json:"consumers,omitempty"`
}

// MLflowAccessToken keeps a Keycloak access token for MLflow fresh in a Secret.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mlflowtoken;mat,categories=mlflow
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.status.secretName`
// +kubebuilder:printcolumn:name="Expires",type=string,format=date-time,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Renewal",type=string,format=date-time,JSONPath=`.status.renewalTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Rotations",type=integer,JSONPath=`.status.rotations`,priority=1
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
type MLflowAccessToken struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec MLflowAccessTokenSpec `json:"spec"`
	// Status is written by the operator. Until it first does, the API server shows
	// observedGeneration -1, so that kstatus-based tools (Flux, kstatus waits) read a resource the
	// operator has not reconciled yet (operator down, or not watching the namespace) as in
	// progress rather than as current.
	// +kubebuilder:default={"observedGeneration":-1}
	Status MLflowAccessTokenStatus `json:"status,omitempty"`
}

// MLflowAccessTokenList is a list of MLflowAccessToken.
//
// +kubebuilder:object:root=true
type MLflowAccessTokenList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MLflowAccessToken `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MLflowAccessToken{}, &MLflowAccessTokenList{})
}

// LabelMap returns the template's labels as plain strings (nil when t is nil).
func (t *SecretTemplate) LabelMap() map[string]string {
	if t == nil || t.Labels == nil {
		return nil
	}
	m := make(map[string]string, len(t.Labels))
	for k, v := range t.Labels {
		m[k] = string(v)
	}
	return m
}

// SecretNameOrDefault is the name of the Secret the token goes to.
func (t *MLflowAccessToken) SecretNameOrDefault() string {
	if t.Spec.SecretName != "" {
		return t.Spec.SecretName
	}
	return t.Name
}
