package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// A KeycloakIssuer checks its realm (OIDC discovery against the real Keycloak), and a client
// secret rotated by the platform is picked up within seconds: the operator watches the issuer's
// Secret, re-checks the issuer and retries its failing tokens at once, instead of at the next
// periodic check (5 minutes) or after the tokens' backoff.
func TestIssuerRotatedClientSecret(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t)
	const rotClient, before, after = "mlflow-rotating", "rotatingSecretBefore0001", "rotatingSecretAfter0002"
	createClientSecret(t, ns, "platform-client", before)
	create(t, &authv1alpha1.KeycloakIssuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "team"},
		Spec: authv1alpha1.KeycloakIssuerSpec{URL: kcServer.URL(), Realm: realm,
			ClientAuth: authv1alpha1.IssuerClientAuth{ClientID: rotClient, ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "platform-client", Key: "client-secret"}}},
	})
	issuer := func() *authv1alpha1.KeycloakIssuer {
		i := &authv1alpha1.KeycloakIssuer{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "team"}, i); err != nil {
			t.Fatal(err)
		}
		return i
	}
	testenv.Eventually(t, 30*time.Second, "the issuer Ready", func() (bool, string) {
		i := issuer()
		c := meta.FindStatusCondition(i.Status.Conditions, authv1alpha1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionTrue && i.Status.Issuer == kcServer.URL()+"/realms/"+realm, fmt.Sprintf("%+v", c)
	})
	create(t, newToken(ns, "train", func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Keycloak = nil
		o.Spec.IssuerRef = &authv1alpha1.IssuerRef{Name: "team"}
	}))
	if o := waitReady(t, ns, "train", 30*time.Second); o.Status.Token == nil || o.Status.Token.AuthorizedParty != rotClient {
		t.Fatalf("token claims %+v", o.Status.Token)
	}

	// The platform rotates the secret in Keycloak first: the next renewal fails.
	setClientSecret(t, ctx, rotClient, after)
	waitReason(t, ns, "train", authv1alpha1.ConditionRenewalFailing, metav1.ConditionTrue, authv1alpha1.ReasonInvalidClientCredentials, 40*time.Second)
	checked := issuer().Status.LastCheckTime.Time

	// Then the Secret: within seconds the issuer is checked again and the token renewed.
	s := getSecret(t, ns, "platform-client")
	s.Data["client-secret"] = []byte(after)
	if err := k8s.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	updated := time.Now()
	waitReason(t, ns, "train", authv1alpha1.ConditionRenewalFailing, metav1.ConditionFalse, authv1alpha1.ReasonRenewalSucceeded, 20*time.Second)
	recovered := time.Since(updated)
	if !issuer().Status.LastCheckTime.After(checked) {
		t.Error("the issuer was not checked again after its Secret changed")
	}
	t.Logf("the rotated client secret was in use %s after the Secret's update", recovered.Round(10*time.Millisecond))
	deleteAndWait(t, get(t, ns, "train"), 30*time.Second)
}

// setClientSecret sets a client's secret through Keycloak's admin API.
func setClientSecret(t *testing.T, ctx context.Context, clientID, secret string) {
	t.Helper()
	status, body, err := kcServer.Admin(ctx, "GET", "/admin/realms/"+realm+"/clients?clientId="+clientID, nil)
	if err != nil || status != 200 {
		t.Fatalf("looking up client %s: %d %v", clientID, status, err)
	}
	var clients []map[string]any
	if err := json.Unmarshal(body, &clients); err != nil || len(clients) != 1 {
		t.Fatalf("client %s: %v %s", clientID, err, body)
	}
	rep := clients[0]
	rep["secret"] = secret
	if status, body, err := kcServer.Admin(ctx, "PUT", "/admin/realms/"+realm+"/clients/"+rep["id"].(string), rep); err != nil || status/100 != 2 {
		t.Fatalf("setting the secret of %s: %d %v %s", clientID, status, err, body)
	}
}
