package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
)

// fleet says how the resources of a benchmark namespace authenticate their Keycloak client.
type fleet int

const (
	// withSecrets: client secrets in a Secret of the namespace, through two KeycloakIssuers with
	// clientAuth.clientSecretRef (or named inline by each resource with -inline).
	withSecrets fleet = iota
	// secretless: tokens of a ServiceAccount of the namespace (clientAuth.serviceAccount,
	// Keycloak's "Signed JWT - Federated" client authenticator); no client secret anywhere.
	secretless
)

// Issuers of the benchmark's namespaces; -inline makes the resources name Keycloak themselves.
const issuerShort, issuerLong = "bench-30s", "bench-5m"

// The secretless phase: one namespace, one ServiceAccount, one Keycloak client bound to it (30 s
// tokens) and one KeycloakIssuer. Keycloak picks a federated client by the token's subject, so a
// ServiceAccount serves exactly one client.
const (
	nsSecretless     = "secretless"
	saSecretless     = "bench-trainer"
	clientSecretless = "bench-secretless"
	issuerSecretless = "bench-secretless"
)

var inline bool

// namespace creates a namespace with what its fleet's resources authenticate with. withSecrets:
// the input Secret with both clients' secrets and (unless -inline) the two KeycloakIssuers the
// resources use, the platform-owned set-up whose client secrets the operator watches instead of
// reading them at every rotation. secretless: the ServiceAccount and (unless -inline) the
// KeycloakIssuer with clientAuth.serviceAccount.
func (e *Env) namespace(ctx context.Context, name string, f fleet) error {
	if err := e.C.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		return err
	}
	if f == secretless {
		if err := e.C.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: saSecretless, Namespace: name}}); err != nil {
			return err
		}
		if inline {
			return nil
		}
		return e.C.Create(ctx, &authv1alpha1.KeycloakIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: issuerSecretless, Namespace: name},
			Spec: authv1alpha1.KeycloakIssuerSpec{URL: e.KC.URL(), Realm: realm,
				ClientAuth: authv1alpha1.IssuerClientAuth{ClientID: clientSecretless, ServiceAccount: &authv1alpha1.ServiceAccountAuth{Name: saSecretless}}},
		})
	}
	if err := e.C.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: inputSecret, Namespace: name},
		StringData: map[string]string{"client-secret": clientShortSec, "client-secret-5m": clientLongSecret},
	}); err != nil {
		return err
	}
	if inline {
		return nil
	}
	for _, i := range []struct{ name, client, key string }{{issuerShort, clientShort, "client-secret"}, {issuerLong, clientLong, "client-secret-5m"}} {
		if err := e.C.Create(ctx, &authv1alpha1.KeycloakIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: i.name, Namespace: name},
			Spec: authv1alpha1.KeycloakIssuerSpec{URL: e.KC.URL(), Realm: realm,
				ClientAuth: authv1alpha1.IssuerClientAuth{ClientID: i.client, ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: inputSecret, Key: i.key}}},
		}); err != nil {
			return err
		}
	}
	return nil
}

// waitIssuers waits until the namespace's issuers are Ready (the operator checked their realm).
func (e *Env) waitIssuers(ctx context.Context, ns string, f fleet) error {
	if inline {
		return nil
	}
	names := []string{issuerShort, issuerLong}
	if f == secretless {
		names = []string{issuerSecretless}
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		ready := 0
		for _, name := range names {
			i := &authv1alpha1.KeycloakIssuer{}
			if err := e.C.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, i); err == nil && meta.IsStatusConditionTrue(i.Status.Conditions, authv1alpha1.ConditionReady) {
				ready++
			}
		}
		if ready == len(names) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the issuers of %s were not Ready within a minute", ns)
}

// newToken is one resource of the fleet: client credentials, 30 s or five-minute tokens.
func newToken(ns, name, kcURL string, lifespan time.Duration, f fleet) *authv1alpha1.MLflowAccessToken {
	clientID, key, issuer := clientShort, "client-secret", issuerShort
	if lifespan > time.Minute {
		clientID, key, issuer = clientLong, "client-secret-5m", issuerLong
	}
	t := &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			// The harness leaves the resources behind (each run uses fresh namespaces); nothing
			// here measures revocation.
			Annotations: map[string]string{annSkipRevoke: "true"}},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			Grant: authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		},
	}
	switch {
	case f == secretless && inline:
		t.Spec.Keycloak = &authv1alpha1.KeycloakSpec{URL: kcURL, Realm: realm, ClientID: clientSecretless, ServiceAccountName: saSecretless}
	case f == secretless:
		t.Spec.IssuerRef = &authv1alpha1.IssuerRef{Name: issuerSecretless}
	case inline:
		t.Spec.Keycloak = &authv1alpha1.KeycloakSpec{URL: kcURL, Realm: realm, ClientID: clientID,
			ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: inputSecret, Key: key}}
	default:
		t.Spec.IssuerRef = &authv1alpha1.IssuerRef{Name: issuer}
	}
	return t
}

// setupSecretless makes the bench realm trust the API server's service-account tokens: a
// Kubernetes identity provider for its issuer, the federated-jwt authenticator in the realm's
// client-authentication flow (the realm is imported from a file), and the client bound to
// system:serviceaccount:secretless:bench-trainer with 30 s access tokens. As test/federated does.
func (e *Env) setupSecretless(ctx context.Context) error {
	if err := e.KC.ConfigureKubernetesIdP(ctx, realm, keycloak.KubernetesIdP{IssuerURL: e.IssuerURL}); err != nil {
		return err
	}
	if _, err := e.KC.EnsureFederatedClientAuthenticator(ctx, realm); err != nil {
		return err
	}
	_, err := e.KC.AddFederatedClient(ctx, realm, keycloak.FederatedClient{ClientID: clientSecretless,
		Subject: keycloak.ServiceAccountSubject(nsSecretless, saSecretless), AccessTokenLifespan: 30 * time.Second})
	return err
}
