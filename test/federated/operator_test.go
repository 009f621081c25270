package federated

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// TestOperatorWithoutClientSecrets runs the operator (in process, wired as cmd/main.go wires it)
// against a ClusterKeycloakIssuer whose clients authenticate with service-account tokens:
// Ready with no client secret anywhere in the cluster; ≥ 20 rotations for a fraction of a
// TokenRequest each; another namespace's identity refused with a clear reason; a deleted
// ServiceAccount stops the issuance at once and its return resumes it; deletion revokes, checked
// by introspection at Keycloak.
func TestOperatorWithoutClientSecrets(t *testing.T) {
	ctx := context.Background()
	c, err := client.New(servers.Config, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	// A client of its own with 6 s tokens, bound to team-a's ServiceAccount "trainer".
	const clientID, sa = "operator-a", "trainer"
	if err := ensureServiceAccount(ctx, nsA, sa); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.AddFederatedClient(ctx, realm, keycloak.FederatedClient{ClientID: clientID,
		Subject: keycloak.ServiceAccountSubject(nsA, sa), AccessTokenLifespan: 6 * time.Second}); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const platformNS = "mto-system"
	must(client.IgnoreAlreadyExists(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: platformNS}})))
	// Keycloak serves plain HTTP here: the cluster issuer allows it, as only a platform may.
	must(c.Create(ctx, &authv1alpha1.ClusterKeycloakIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "platform"},
		Spec: authv1alpha1.ClusterKeycloakIssuerSpec{AllowInsecureHTTP: true, KeycloakIssuerSpec: authv1alpha1.KeycloakIssuerSpec{
			URL: kc.URL(), Realm: realm,
			ClientAuth: authv1alpha1.IssuerClientAuth{ServiceAccount: &authv1alpha1.ServiceAccountAuth{Name: sa}},
		}},
	}))

	o := testenv.OperatorOptions()
	o.Reconciler.Guardrails.AllowInsecureHTTP = false // only the cluster issuer's allowInsecureHTTP lets it through
	o.Reconciler.ClusterResourceNamespace = platformNS
	o.IssuerRecheckInterval = 10 * time.Second
	o.SkipNameValidation = true
	stop, err := testenv.StartOperator(ctx, servers.Config, o)
	must(err)
	defer stop()

	testenv.Eventually(t, 60*time.Second, "the ClusterKeycloakIssuer is Ready", func() (bool, string) {
		iss := &authv1alpha1.ClusterKeycloakIssuer{}
		if err := c.Get(ctx, types.NamespacedName{Name: "platform"}, iss); err != nil {
			return false, err.Error()
		}
		r := meta.FindStatusCondition(iss.Status.Conditions, authv1alpha1.ConditionReady)
		return r != nil && r.Status == metav1.ConditionTrue && iss.Status.Issuer == realmIssuer, fmt.Sprintf("%+v issuer %q", r, iss.Status.Issuer)
	})

	token := func(ns, name, clientID string) *authv1alpha1.MLflowAccessToken {
		return &authv1alpha1.MLflowAccessToken{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: authv1alpha1.MLflowAccessTokenSpec{
				IssuerRef: &authv1alpha1.IssuerRef{Kind: authv1alpha1.KindClusterKeycloakIssuer, Name: "platform"},
				ClientID:  clientID, ServiceAccountName: sa,
				Grant: authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
			},
		}
	}
	get := func(ns, name string) *authv1alpha1.MLflowAccessToken {
		obj := &authv1alpha1.MLflowAccessToken{}
		must(c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, obj))
		return obj
	}
	waitReason := func(ns, name, typ, reason string, timeout time.Duration) *authv1alpha1.MLflowAccessToken {
		var obj *authv1alpha1.MLflowAccessToken
		testenv.Eventually(t, timeout, fmt.Sprintf("%s/%s %s=%s", ns, name, typ, reason), func() (bool, string) {
			obj = get(ns, name)
			cnd := meta.FindStatusCondition(obj.Status.Conditions, typ)
			if cnd == nil {
				return false, "no condition"
			}
			return cnd.Reason == reason, cnd.Reason + ": " + cnd.Message
		})
		return obj
	}

	// Ready, with no client secret in the cluster.
	requestsBefore := tokenRequests(t)
	must(c.Create(ctx, token(nsA, "train", clientID)))
	obj := waitReason(nsA, "train", authv1alpha1.ConditionReady, authv1alpha1.ReasonTokenValid, 60*time.Second)
	if obj.Status.Token == nil || obj.Status.Token.AuthorizedParty != clientID {
		t.Fatalf("token claims %+v, want azp %s", obj.Status.Token, clientID)
	}
	// Every Secret of the namespaces this operator serves and of its own: other tests of the
	// package keep client secrets in theirs.
	var all []corev1.Secret
	for _, ns := range []string{nsA, nsB, platformNS} {
		var l corev1.SecretList
		must(c.List(ctx, &l, client.InNamespace(ns)))
		all = append(all, l.Items...)
	}
	for _, s := range all {
		for k := range s.Data {
			if strings.Contains(strings.ToLower(k), "client-secret") || k == "clientSecret" {
				t.Errorf("Secret %s/%s holds a client secret (%s): the secretless path must hold none", s.Namespace, s.Name, k)
			}
		}
	}

	// ≥ 20 rotations for a fraction of a TokenRequest each.
	rotBefore := obj.Status.Rotations
	testenv.Eventually(t, 4*time.Minute, "20 rotations", func() (bool, string) {
		n := get(nsA, "train").Status.Rotations - rotBefore
		return n >= 20, fmt.Sprintf("%d rotations", n)
	})
	rotations := get(nsA, "train").Status.Rotations - rotBefore + 1
	requests := tokenRequests(t) - requestsBefore
	t.Logf("%d TokenRequests for %d tokens (%.3f per rotation)", requests, rotations, float64(requests)/float64(rotations))
	if float64(requests) > 0.1*float64(rotations) {
		t.Errorf("%d TokenRequests for %d rotations: want ≤ 0.1 per rotation (one service-account token reused)", requests, rotations)
	}

	// Another namespace's identity: team-b's ServiceAccount cannot obtain team-a's client.
	if err := ensureServiceAccount(ctx, nsB, sa); err != nil {
		t.Fatal(err)
	}
	must(c.Create(ctx, token(nsB, "steal", clientID)))
	b := waitReason(nsB, "steal", authv1alpha1.ConditionReady, authv1alpha1.ReasonInvalidClientCredentials, 60*time.Second)
	if s := &(corev1.Secret{}); c.Get(ctx, types.NamespacedName{Namespace: nsB, Name: "steal"}, s) == nil {
		t.Errorf("a Secret was written for a token Keycloak refused: %v", s.Name)
	}
	t.Logf("another namespace's identity: %s", meta.FindStatusCondition(b.Status.Conditions, authv1alpha1.ConditionReady).Message)

	// The ServiceAccount deleted: no more tokens, at once (Keycloak would accept its tokens until
	// they expire); back: tokens again.
	must(c.Delete(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: sa}}))
	waitReason(nsA, "train", authv1alpha1.ConditionRenewalFailing, authv1alpha1.ReasonServiceAccountNotFound, 60*time.Second)
	must(ensureServiceAccount(ctx, nsA, sa))
	waitReason(nsA, "train", authv1alpha1.ConditionRenewalFailing, authv1alpha1.ReasonRenewalSucceeded, 90*time.Second)

	// Deletion revokes: the last access token is inactive at Keycloak.
	s := &corev1.Secret{}
	must(c.Get(ctx, types.NamespacedName{Namespace: nsA, Name: "train"}, s))
	last := string(s.Data[tokensecret.KeyToken])
	must(c.Delete(ctx, get(nsA, "train")))
	testenv.Eventually(t, 60*time.Second, "the resource gone", func() (bool, string) {
		err := c.Get(ctx, types.NamespacedName{Namespace: nsA, Name: "train"}, &authv1alpha1.MLflowAccessToken{})
		return err != nil, "still there"
	})
	if active := introspectFederated(t, nsA, sa, clientID, last); active {
		t.Error("the last access token is still active after the resource's deletion")
	}
	must(c.Delete(ctx, get(nsB, "steal")))
}

// tokenRequests is the operator's count of TokenRequests (its own metric).
func tokenRequests(t *testing.T) int {
	t.Helper()
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() == metrics.NameSATokenRequests {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return int(n)
}

// introspectFederated asks Keycloak whether token is active, authenticating as clientID with a
// token of its ServiceAccount.
func introspectFederated(t *testing.T, ns, sa, clientID, token string) bool {
	t.Helper()
	form := federatedAuth(saToken(t, ns, sa, 600, realmIssuer))
	form.Set("client_id", clientID)
	form.Set("token", token)
	form.Set("token_type_hint", "access_token")
	a := post(t, endpoint("token/introspect"), form)
	if a.Status != 200 {
		t.Fatalf("introspection answered %d: %v", a.Status, a.Body)
	}
	active, _ := a.Body["active"].(bool)
	return active
}
