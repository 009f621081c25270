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

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	// ClientID and ClientSecret authenticate the client. The secret is never printed.
	ClientID     string
	ClientSecret string
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
func resolveKeycloak(ctx context.Context, c client.Reader, obj *authv1alpha1.MLflowAccessToken) (*keycloakAccess, error) {
	k := obj.Spec.Keycloak
	a := &keycloakAccess{URL: strings.TrimRight(k.URL, "/"), Realm: k.Realm, ClientID: k.ClientID}

	switch {
	case k.CABundle != "":
		a.CABundle = []byte(k.CABundle)
	case k.CAConfigMapRef != nil:
		key := firstNonEmpty(k.CAConfigMapRef.Key, "ca.crt")
		cm := &corev1.ConfigMap{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: k.CAConfigMapRef.Name}, cm); err != nil {
			return nil, readError(err, "ConfigMap", obj.Namespace, k.CAConfigMapRef.Name, "keycloak.caConfigMapRef",
				"bootstrap verifies Keycloak's certificate with that CA bundle, as the operator does")
		}
		v, ok := cm.Data[key]
		if !ok {
			return nil, fmt.Errorf("ConfigMap %s/%s (keycloak.caConfigMapRef) has no key %q", obj.Namespace, cm.Name, key)
		}
		a.CABundle = []byte(v)
	}
	if a.CABundle != nil && !x509.NewCertPool().AppendCertsFromPEM(a.CABundle) {
		return nil, fmt.Errorf("the CA bundle of mlflowaccesstoken %s/%s holds no PEM certificate", obj.Namespace, obj.Name)
	}

	ref := k.ClientSecretRef
	key := firstNonEmpty(ref.Key, "client-secret")
	a.SecretSource = fmt.Sprintf("Secret %s/%s key %q (keycloak.clientSecretRef)", obj.Namespace, ref.Name, key)
	s := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: ref.Name}, s); err != nil {
		return nil, readError(err, "Secret", obj.Namespace, ref.Name, "keycloak.clientSecretRef",
			fmt.Sprintf("bootstrap authenticates to Keycloak as client %q with that secret, as the operator does: ask for get on it, or let someone who has it run bootstrap", k.ClientID))
	}
	v, ok := s.Data[key]
	if !ok || len(v) == 0 {
		return nil, fmt.Errorf("%s is missing or empty; it has keys %v", a.SecretSource, sortedKeys(s.Data))
	}
	a.ClientSecret = string(v)
	return a, nil
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
