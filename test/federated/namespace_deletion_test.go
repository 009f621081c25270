package federated

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// Facts of realm-federated.json for this test.
const (
	secretClient       = "secret-client"
	secretClientSecret = "secretClientSecret0001"
	doomedClient       = "doomed-federated" // bound to system:serviceaccount:doomed:token-sa
	doomedNS           = "doomed"
	doomedSA           = "token-sa"
	aliceUser          = "alice"
	alicePassword      = "alicePassword0001"
)

// TestNamespaceDeletionEndsEverySession deletes a namespace holding 20 resources per credential
// source — a client secret in the namespace, a ClusterKeycloakIssuer's secret in the platform's
// namespace, and the namespace's own ServiceAccount (no secret) — each 10 client-credentials and
// 10 password grants with offline sessions. The real namespace controller (kube-controller-
// manager) empties the namespace in its own order: the client secrets, the user's password and
// the ServiceAccount may all go before the resources. Every access token must be revoked and
// every offline session ended, checked at Keycloak, and the namespace gone in bounded time.
func TestNamespaceDeletionEndsEverySession(t *testing.T) {
	if !servers.HasNamespaceController() {
		t.Fatal("the suite runs without a namespace controller (testenv.Options.NamespaceController)")
	}
	ctx := context.Background()
	c, err := client.New(servers.Config, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const platformNS = "mto-platform"
	for _, ns := range []string{platformNS, doomedNS} {
		must(client.IgnoreAlreadyExists(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})))
	}
	must(c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: doomedNS, Name: doomedSA}}))
	secret := func(ns, name string, data map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: data}
	}
	must(c.Create(ctx, secret(doomedNS, "client", map[string]string{"client-secret": secretClientSecret})))
	must(c.Create(ctx, secret(platformNS, "client", map[string]string{"client-secret": secretClientSecret})))
	must(c.Create(ctx, secret(doomedNS, "alice", map[string]string{"username": aliceUser, "password": alicePassword})))
	issuer := func(name string, auth authv1alpha1.IssuerClientAuth) *authv1alpha1.ClusterKeycloakIssuer {
		return &authv1alpha1.ClusterKeycloakIssuer{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: authv1alpha1.ClusterKeycloakIssuerSpec{AllowInsecureHTTP: true, KeycloakIssuerSpec: authv1alpha1.KeycloakIssuerSpec{
				URL: kc.URL(), Realm: realm, ClientAuth: auth}}}
	}
	must(c.Create(ctx, issuer("doomed-secret", authv1alpha1.IssuerClientAuth{ClientID: secretClient,
		ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "client", Key: "client-secret"}})))
	must(c.Create(ctx, issuer("doomed-sa", authv1alpha1.IssuerClientAuth{ClientID: doomedClient,
		ServiceAccount: &authv1alpha1.ServiceAccountAuth{Name: doomedSA}})))

	o := testenv.OperatorOptions()
	o.Reconciler.ClusterResourceNamespace = platformNS
	o.Reconciler.Guardrails.AllowInsecureHTTP = true // the inline resources' Keycloak is plain HTTP here
	o.Reconciler.RevocationTimeout = 2 * time.Minute
	o.SkipNameValidation = true
	stop, err := testenv.StartOperator(ctx, servers.Config, o)
	must(err)
	defer stop()

	// 60 resources: 3 sources × (10 client credentials + 10 password with offline sessions).
	type source struct {
		name  string
		apply func(*authv1alpha1.MLflowAccessToken)
		cli   string
	}
	sources := []source{
		{"inline", func(m *authv1alpha1.MLflowAccessToken) {
			m.Spec.Keycloak = &authv1alpha1.KeycloakSpec{URL: kc.URL(), Realm: realm, ClientID: secretClient,
				ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "client", Key: "client-secret"}}
		}, secretClient},
		{"platform", func(m *authv1alpha1.MLflowAccessToken) {
			m.Spec.IssuerRef = &authv1alpha1.IssuerRef{Kind: authv1alpha1.KindClusterKeycloakIssuer, Name: "doomed-secret"}
		}, secretClient},
		{"sa", func(m *authv1alpha1.MLflowAccessToken) {
			m.Spec.IssuerRef = &authv1alpha1.IssuerRef{Kind: authv1alpha1.KindClusterKeycloakIssuer, Name: "doomed-sa"}
		}, doomedClient},
	}
	var names []string
	for _, src := range sources {
		for i := range 20 {
			m := &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Namespace: doomedNS, Name: fmt.Sprintf("%s-%02d", src.name, i)}}
			src.apply(m)
			if i < 10 {
				m.Spec.Grant = authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials}
			} else {
				m.Spec.Grant = authv1alpha1.GrantSpec{Type: authv1alpha1.GrantPassword, Offline: true,
					PasswordSecretRef: &authv1alpha1.UserCredentialsRef{Name: "alice"}}
			}
			must(c.Create(ctx, m))
			names = append(names, m.Name)
		}
	}
	testenv.Eventually(t, 5*time.Minute, "60 resources Ready", func() (bool, string) {
		var l authv1alpha1.MLflowAccessTokenList
		if err := c.List(ctx, &l, client.InNamespace(doomedNS)); err != nil {
			return false, err.Error()
		}
		ready := 0
		var last string
		for _, m := range l.Items {
			if meta.IsStatusConditionTrue(m.Status.Conditions, authv1alpha1.ConditionReady) {
				ready++
			} else if r := meta.FindStatusCondition(m.Status.Conditions, authv1alpha1.ConditionReady); r != nil {
				last = m.Name + ": " + r.Reason + ": " + r.Message
			}
		}
		return ready == len(names), fmt.Sprintf("%d of %d Ready (%s)", ready, len(names), last)
	})

	// What must end: every access token, every offline session of alice.
	type tokenOf struct{ name, client, token string }
	var access []tokenOf
	for _, src := range sources {
		for i := range 20 {
			n := fmt.Sprintf("%s-%02d", src.name, i)
			s := &corev1.Secret{}
			must(c.Get(ctx, types.NamespacedName{Namespace: doomedNS, Name: n}, s))
			access = append(access, tokenOf{n, src.cli, string(s.Data[tokensecret.KeyToken])})
		}
	}
	// A token of the ServiceAccount for checking its client's tokens afterwards: Keycloak accepts it
	// after the ServiceAccount is deleted (test TestDeletedServiceAccountStillAccepted).
	saTok := saToken(t, doomedNS, doomedSA, 1200, realmIssuer)
	introspect := func(tk tokenOf) bool {
		form := url.Values{"client_id": {tk.client}, "token": {tk.token}, "token_type_hint": {"access_token"}}
		if tk.client == doomedClient {
			for k, v := range federatedAuth(saTok) {
				form[k] = v
			}
		} else {
			form.Set("client_secret", secretClientSecret)
		}
		a := post(t, endpoint("token/introspect"), form)
		if a.Status != 200 {
			t.Fatalf("introspecting %s: %d %s", tk.name, a.Status, a.Raw)
		}
		active, _ := a.Body["active"].(bool)
		return active
	}
	for _, tk := range access {
		if !introspect(tk) {
			t.Fatalf("%s's token is not active before the deletion: the check afterwards would prove nothing", tk.name)
		}
	}
	offlineBefore := offlineSessions(t, ctx)
	if offlineBefore < 30 {
		t.Fatalf("alice has %d offline sessions before the deletion, want the 30 of the password resources", offlineBefore)
	}

	begin := time.Now()
	must(c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: doomedNS}}))
	testenv.Eventually(t, 5*time.Minute, "the namespace gone", func() (bool, string) {
		err := c.Get(ctx, types.NamespacedName{Name: doomedNS}, &corev1.Namespace{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		var l authv1alpha1.MLflowAccessTokenList
		_ = c.List(ctx, &l, client.InNamespace(doomedNS))
		return false, fmt.Sprintf("%d resources left", len(l.Items))
	})
	gone := time.Since(begin)

	revoked := 0
	for _, tk := range access {
		if !introspect(tk) {
			revoked++
		} else {
			t.Errorf("%s: its access token is still active after the namespace's deletion", tk.name)
		}
	}
	offlineAfter := offlineSessions(t, ctx)
	t.Logf("namespace gone %s after its deletion; %d of %d access tokens revoked; offline sessions of the user %d → %d",
		gone.Round(100*time.Millisecond), revoked, len(access), offlineBefore, offlineAfter)
	if offlineAfter != 0 {
		t.Errorf("%d offline sessions still alive after the namespace's deletion", offlineAfter)
	}
}

// offlineSessions counts alice's offline sessions of both clients, through the admin API.
func offlineSessions(t *testing.T, ctx context.Context) int {
	t.Helper()
	var users []struct{ ID string }
	adminJSON(t, ctx, "/admin/realms/"+realm+"/users?exact=true&username="+aliceUser, &users)
	if len(users) != 1 {
		t.Fatalf("user %s: %v", aliceUser, users)
	}
	n := 0
	for _, cid := range []string{secretClient, doomedClient} {
		var clients []struct{ ID string }
		adminJSON(t, ctx, "/admin/realms/"+realm+"/clients?clientId="+cid, &clients)
		if len(clients) != 1 {
			t.Fatalf("client %s: %v", cid, clients)
		}
		var sessions []json.RawMessage
		adminJSON(t, ctx, "/admin/realms/"+realm+"/users/"+users[0].ID+"/offline-sessions/"+clients[0].ID, &sessions)
		n += len(sessions)
	}
	return n
}

func adminJSON(t *testing.T, ctx context.Context, path string, out any) {
	t.Helper()
	status, body, err := kc.Admin(ctx, "GET", path, nil)
	if err != nil || status != 200 {
		t.Fatalf("GET %s: %d %v %s", path, status, err, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}
