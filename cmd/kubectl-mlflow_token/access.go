package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// keycloakAccess is where and as whom the operator talks to Keycloak for a resource. bootstrap
// must use exactly the same: a refresh token is bound to the client it was issued to and to the
// base URL it was issued through (its iss claim), so a token obtained any other way cannot be
// redeemed by the operator.
type keycloakAccess struct {
	// URL is Keycloak's base URL, without /realms/...
	URL   string
	Realm string
	// ClientID and ClientSecret (or Assertion, a service-account token, for a client that uses
	// Keycloak's federated client authentication) authenticate the client. Never printed.
	ClientID     string
	ClientSecret string
	Assertion    string
	// CABundle is the PEM bundle Keycloak's certificate must chain to (nil: the system's roots).
	CABundle []byte
	// SecretSource says where the client secret came from, for messages.
	SecretSource string
}

// resolveKeycloak answers, for one resource, "which Keycloak URL, realm, client, CA and client
// credentials does it use?", reading the Secret and ConfigMap it names as the person running the
// plugin. It is the only place in the plugin that answers this: when resources gain other ways
// to name their Keycloak (an issuer reference holding URL, realm, CA and client authentication),
// extend this function and bootstrap follows.
func resolveKeycloak(ctx context.Context, c client.Client, obj *authv1alpha1.MLflowAccessToken, clusterResourceNS string) (*keycloakAccess, error) {
	if ref := obj.Spec.IssuerRef; ref != nil {
		return resolveIssuer(ctx, c, obj, ref, clusterResourceNS)
	}
	k := obj.Spec.Keycloak
	if k == nil {
		return nil, fmt.Errorf("mlflowaccesstoken %s/%s names neither an issuer nor a Keycloak", obj.Namespace, obj.Name)
	}
	a := &keycloakAccess{URL: strings.TrimRight(k.URL, "/"), Realm: k.Realm, ClientID: k.ClientID}
	var ca *caSource
	switch {
	case k.CABundle != "":
		a.CABundle = []byte(k.CABundle)
	case k.CAConfigMapRef != nil:
		ca = &caSource{kind: "ConfigMap", ns: obj.Namespace, name: k.CAConfigMapRef.Name, key: k.CAConfigMapRef.Key, field: "keycloak.caConfigMapRef"}
	}
	if err := a.readCA(ctx, c, ca); err != nil {
		return nil, err
	}
	if k.ServiceAccountName != "" {
		return a, a.serviceAccountToken(ctx, c, obj.Namespace, k.ServiceAccountName)
	}
	return a, a.readClientSecret(ctx, c, obj.Namespace, k.ClientSecretRef.Name, k.ClientSecretRef.Key, "keycloak.clientSecretRef")
}

// resolveIssuer resolves a resource's issuer as the operator does: URL, realm and CA from the
// issuer; the client from spec.clientID or the issuer's; its credentials from the issuer's
// Secret (in the issuer's namespace, or the operator's for a cluster issuer) or a token of the
// ServiceAccount in the resource's namespace.
func resolveIssuer(ctx context.Context, c client.Client, obj *authv1alpha1.MLflowAccessToken, ref *authv1alpha1.IssuerRef, clusterResourceNS string) (*keycloakAccess, error) {
	var spec authv1alpha1.KeycloakIssuerSpec
	credsNS := obj.Namespace
	if ref.Kind == authv1alpha1.KindClusterKeycloakIssuer {
		iss := &authv1alpha1.ClusterKeycloakIssuer{}
		if err := c.Get(ctx, client.ObjectKey{Name: ref.Name}, iss); err != nil {
			return nil, readError(err, "ClusterKeycloakIssuer", "", ref.Name, "spec.issuerRef", "bootstrap uses the issuer's Keycloak, as the operator does")
		}
		spec, credsNS = iss.Spec.KeycloakIssuerSpec, clusterResourceNS
	} else {
		iss := &authv1alpha1.KeycloakIssuer{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: ref.Name}, iss); err != nil {
			return nil, readError(err, "KeycloakIssuer", obj.Namespace, ref.Name, "spec.issuerRef", "bootstrap uses the issuer's Keycloak, as the operator does")
		}
		spec = iss.Spec
	}
	a := &keycloakAccess{URL: strings.TrimRight(spec.URL, "/"), Realm: spec.Realm, ClientID: firstNonEmpty(obj.Spec.ClientID, spec.ClientAuth.ClientID)}
	var ca *caSource
	if s := spec.CA; s != nil {
		if s.ConfigMapRef != nil {
			ca = &caSource{kind: "ConfigMap", ns: credsNS, name: s.ConfigMapRef.Name, key: s.ConfigMapRef.Key, field: "the issuer's ca.configMapRef"}
		} else {
			ca = &caSource{kind: "Secret", ns: credsNS, name: s.SecretRef.Name, key: s.SecretRef.Key, field: "the issuer's ca.secretRef"}
		}
	}
	if err := a.readCA(ctx, c, ca); err != nil {
		return nil, err
	}
	if sa := spec.ClientAuth.ServiceAccount; sa != nil {
		return a, a.serviceAccountToken(ctx, c, obj.Namespace, firstNonEmpty(obj.Spec.ServiceAccountName, sa.Name))
	}
	r := spec.ClientAuth.ClientSecretRef
	return a, a.readClientSecret(ctx, c, credsNS, r.Name, r.Key, "the issuer's clientAuth.clientSecretRef")
}

// caSource names a CA bundle in a ConfigMap or Secret.
type caSource struct{ kind, ns, name, key, field string }

func (a *keycloakAccess) readCA(ctx context.Context, c client.Reader, src *caSource) error {
	if src != nil {
		key := firstNonEmpty(src.key, "ca.crt")
		why := "bootstrap verifies Keycloak's certificate with that CA bundle, as the operator does"
		if src.kind == "ConfigMap" {
			cm := &corev1.ConfigMap{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: src.ns, Name: src.name}, cm); err != nil {
				return readError(err, "ConfigMap", src.ns, src.name, src.field, why)
			}
			v, ok := cm.Data[key]
			if !ok {
				return fmt.Errorf("ConfigMap %s/%s (%s) has no key %q", src.ns, src.name, src.field, key)
			}
			a.CABundle = []byte(v)
		} else {
			s := &corev1.Secret{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: src.ns, Name: src.name}, s); err != nil {
				return readError(err, "Secret", src.ns, src.name, src.field, why)
			}
			a.CABundle = s.Data[key]
		}
	}
	if a.CABundle != nil && !x509.NewCertPool().AppendCertsFromPEM(a.CABundle) {
		return fmt.Errorf("the CA bundle holds no PEM certificate")
	}
	return nil
}

func (a *keycloakAccess) readClientSecret(ctx context.Context, c client.Reader, ns, name, key, field string) error {
	key = firstNonEmpty(key, "client-secret")
	a.SecretSource = fmt.Sprintf("Secret %s/%s key %q (%s)", ns, name, key, field)
	s := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		return readError(err, "Secret", ns, name, field,
			fmt.Sprintf("bootstrap authenticates to Keycloak as client %q with that secret, as the operator does: ask for get on it, or let someone who has it run bootstrap", a.ClientID))
	}
	v, ok := s.Data[key]
	if !ok || len(v) == 0 {
		return fmt.Errorf("%s is missing or empty; it has keys %v", a.SecretSource, sortedKeys(s.Data))
	}
	a.ClientSecret = string(v)
	return nil
}

// serviceAccountToken asks for a short-lived token of the ServiceAccount whose identity the
// client is bound to (audience: the realm's issuer URL), as the operator does: no client secret.
func (a *keycloakAccess) serviceAccountToken(ctx context.Context, c client.Client, ns, name string) error {
	a.SecretSource = fmt.Sprintf("a token of ServiceAccount %s/%s", ns, name)
	life := int64(600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{a.realmURL("")}, ExpirationSeconds: &life}}
	if err := c.SubResource("token").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, tr); err != nil {
		return readError(err, "ServiceAccount", ns, name, "service-account client authentication",
			"bootstrap authenticates the client with a token of that ServiceAccount, as the operator does: ask for create on serviceaccounts/token")
	}
	a.Assertion = tr.Status.Token
	return nil
}

// readError explains a failed read of a Secret or ConfigMap the resource names.
func readError(err error, kind, ns, name, field, why string) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("you may not read %s %s/%s (%s): %s", kind, ns, name, field, why)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s %s/%s (%s) does not exist", kind, ns, name, field)
	}
	return fmt.Errorf("reading %s %s/%s (%s): %w", kind, ns, name, field, err)
}

// realmURL is an endpoint of the realm, e.g. realmURL("/protocol/openid-connect/token").
func (a *keycloakAccess) realmURL(path string) string {
	return a.URL + "/realms/" + url.PathEscape(a.Realm) + path
}

// httpClient verifies Keycloak's certificate against the CA bundle (or the system's roots),
// follows no redirects (a redirect would move the client secret to another URL) and bounds
// every request.
func (a *keycloakAccess) httpClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if a.CABundle != nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(a.CABundle)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{
		Transport: tr,
		Timeout:   30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	out := keys(m)
	sort.Strings(out)
	return out
}
