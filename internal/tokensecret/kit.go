package tokensecret

import (
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Kit is what revocation needs, kept in the state Secret: where the token came from and how to
// authenticate there. The state Secret carries the operator's finalizer, so the kit outlives a
// namespace deletion that removes the user's Secrets, ServiceAccounts or issuer first; deletion
// uses it when the live sources are gone. It holds secrets: never log it.
type Kit struct {
	URL, Realm, ClientID string
	// CABundle is the PEM CA bundle Keycloak's certificate chains to (nil: the system's roots).
	CABundle []byte
	// ClientSecret is a copy of a client secret from the resource's own namespace (empty when the
	// secret is the platform's, in the operator's namespace, which a tenant's namespace deletion
	// does not touch).
	ClientSecret string
	// Assertion is a service-account token that authenticates the client, valid until
	// AssertionExpires.
	Assertion        string
	AssertionExpires time.Time
	// AllowHTTP: the platform allowed this plain http:// URL when the kit was written (a
	// ClusterKeycloakIssuer's allowInsecureHTTP). The operator's own rules apply on top.
	AllowHTTP bool
}

const (
	keyKitClientSecret = "client-secret"
	keyKitAssertion    = "client-assertion"
	keyKitCA           = "ca.crt"

	annKitURL       = annotationPrefix + "keycloak-url"
	annKitRealm     = annotationPrefix + "keycloak-realm"
	annKitClientID  = annotationPrefix + "keycloak-client-id"
	annKitAssertExp = annotationPrefix + "client-assertion-expires"
	annKitAllowHTTP = annotationPrefix + "keycloak-allow-insecure-http"
)

// ApplyKit writes k onto the state Secret s and reports whether anything changed.
func ApplyKit(s *corev1.Secret, k Kit) bool {
	before := s.DeepCopy()
	ann := maps.Clone(s.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	data := maps.Clone(s.Data)
	if data == nil {
		data = map[string][]byte{}
	}
	setOrDelete(ann, annKitURL, k.URL)
	setOrDelete(ann, annKitRealm, k.Realm)
	setOrDelete(ann, annKitClientID, k.ClientID)
	exp := ""
	if k.Assertion != "" {
		exp = formatTime(k.AssertionExpires)
	}
	setOrDelete(ann, annKitAssertExp, exp)
	allow := ""
	if k.AllowHTTP {
		allow = "true"
	}
	setOrDelete(ann, annKitAllowHTTP, allow)
	setOrDeleteData(data, keyKitClientSecret, k.ClientSecret)
	setOrDeleteData(data, keyKitAssertion, k.Assertion)
	setOrDeleteData(data, keyKitCA, string(k.CABundle))
	s.Annotations, s.Data = ann, data
	labels := maps.Clone(s.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelManagedBy] = ManagedByValue
	labels[LabelRole] = RoleRefreshState
	s.Labels = labels
	s.Type = corev1.SecretTypeOpaque
	ensureFinalizer(s)
	return changed(before, s)
}

// Superseded is an access token that a rotation replaced and that is revoked at RevokeAt
// (spec.revocation.revokeSuperseded). It holds a token: never log it.
type Superseded struct {
	Token    string
	RevokeAt time.Time
}

const (
	keySupersededToken = "superseded-token"
	annSupersededAt    = annotationPrefix + "superseded-revoke-at"
)

// ApplySuperseded records sup in the state Secret s (nil: none pending) and reports whether
// that changed it.
func ApplySuperseded(s *corev1.Secret, sup *Superseded) bool {
	before := s.DeepCopy()
	ann, data := maps.Clone(s.Annotations), maps.Clone(s.Data)
	if ann == nil {
		ann = map[string]string{}
	}
	if data == nil {
		data = map[string][]byte{}
	}
	tok, at := "", ""
	if sup != nil {
		tok, at = sup.Token, formatTime(sup.RevokeAt)
	}
	setOrDeleteData(data, keySupersededToken, tok)
	setOrDelete(ann, annSupersededAt, at)
	s.Annotations, s.Data = ann, data
	return changed(before, s)
}

// ReadSuperseded reads the superseded token pending revocation (nil: none).
func ReadSuperseded(s *corev1.Secret) *Superseded {
	if s == nil || len(s.Data[keySupersededToken]) == 0 {
		return nil
	}
	t, err := time.Parse(time.RFC3339, s.Annotations[annSupersededAt])
	if err != nil {
		return nil
	}
	return &Superseded{Token: string(s.Data[keySupersededToken]), RevokeAt: t}
}

// ReadKit reads the kit of a state Secret (nil: none recorded).
func ReadKit(s *corev1.Secret) *Kit {
	if s == nil || s.Annotations[annKitURL] == "" {
		return nil
	}
	k := &Kit{
		URL: s.Annotations[annKitURL], Realm: s.Annotations[annKitRealm], ClientID: s.Annotations[annKitClientID],
		CABundle: s.Data[keyKitCA], ClientSecret: string(s.Data[keyKitClientSecret]), Assertion: string(s.Data[keyKitAssertion]),
		AllowHTTP: s.Annotations[annKitAllowHTTP] == "true",
	}
	if t, err := time.Parse(time.RFC3339, s.Annotations[annKitAssertExp]); err == nil {
		k.AssertionExpires = t
	}
	return k
}

func setOrDelete(m map[string]string, k, v string) {
	if v == "" {
		delete(m, k)
		return
	}
	m[k] = v
}

func setOrDeleteData(m map[string][]byte, k, v string) {
	if v == "" {
		delete(m, k)
		return
	}
	m[k] = []byte(v)
}
