package integration

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// simulateCrashMidRedemption stops the operator and leaves the state Secret as a SIGKILL between
// "marker written" and "new refresh token saved" would: a stale redeeming marker. With consume,
// Keycloak is made to have processed that redemption (the test redeems the token itself and
// throws the answer away, as a dying operator would). Then the operator starts again.
func simulateCrashMidRedemption(t *testing.T, obj *authv1alpha1.MLflowAccessToken, consume bool) {
	t.Helper()
	stopOperator()
	defer func() {
		var err error
		if stopOperator, err = startOperator(context.Background(), restCfg); err != nil {
			t.Fatalf("restarting the operator: %v", err)
		}
	}()
	state := getSecret(t, obj.Namespace, tokensecret.StateSecretName(obj))
	chain := tokensecret.ReadChain(state)
	if chain == nil || chain.RefreshToken == "" {
		t.Fatal("no chain in the state Secret")
	}
	chain.Redeeming = tokensecret.RedeemingMarker(chain.RefreshToken, time.Now().Add(-time.Minute))
	tokensecret.ApplyChain(state, *chain)
	// As the operator's own marker write would be: sealed.
	keys, err := testenv.OperatorKeys(context.Background(), restCfgAdmin)
	if err != nil {
		t.Fatal(err)
	}
	tokensecret.Seal(state, keys)
	if err := k8s.Update(context.Background(), state); err != nil {
		t.Fatal(err)
	}
	if consume {
		resp, err := http.PostForm(kcServer.URL()+"/realms/"+strictRealm+"/protocol/openid-connect/token", url.Values{
			"grant_type": {"refresh_token"}, "client_id": {clientID}, "client_secret": {clientSecret}, "refresh_token": {chain.RefreshToken}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("consuming the refresh token: %s", resp.Status)
		}
	}
}

// An operator killed mid-redemption never redeems a refresh token Keycloak already rotated (that
// would end the session under strict rotation), and carries on when the redemption had not
// reached Keycloak.
func TestInterruptedRedemption(t *testing.T) {
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	userSession := func(user string) []string {
		return sessionIDs(t, strictRealm+"/users/"+userID(t, strictRealm, user)+"/sessions")
	}

	// 1. The interrupted redemption never reached Keycloak: the chain goes on, same session.
	boot := passwordGrant(t, strictRealm, clientID, clientSecret, "ivan", "ivan-password", false)
	seenTokens.add(boot.RefreshToken)
	createBootstrapSecret(t, ns, "ivan-boot", boot.RefreshToken)
	create(t, strictToken(ns, "notreached", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantRefreshToken,
		RefreshTokenSecretRef: &authv1alpha1.RefreshTokenRef{Name: "ivan-boot"}}))
	obj := waitReady(t, ns, "notreached", 30*time.Second)
	simulateCrashMidRedemption(t, obj, false)
	testenv.Eventually(t, waitForRotation, "a rotation after the interrupted redemption", func() (bool, string) {
		o := get(t, ns, "notreached")
		return o.Status.Rotations > obj.Status.Rotations && condStatus(o, authv1alpha1.ConditionReady) == metav1.ConditionTrue, "waiting"
	})
	if o := get(t, ns, "notreached"); o.Status.SessionID != obj.Status.SessionID || !slices.Contains(userSession("ivan"), obj.Status.SessionID) {
		t.Errorf("the chain did not survive: session %s → %s", obj.Status.SessionID, o.Status.SessionID)
	}

	// 2. Keycloak had rotated the token: the operator must not redeem it again. The session,
	// kept alive by the test's own redemption, proves it: a second redemption would end it.
	boot2 := passwordGrant(t, strictRealm, clientID, clientSecret, "irene", "irene-password", false)
	seenTokens.add(boot2.RefreshToken)
	createBootstrapSecret(t, ns, "irene-boot", boot2.RefreshToken)
	create(t, strictToken(ns, "reached", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantRefreshToken,
		RefreshTokenSecretRef: &authv1alpha1.RefreshTokenRef{Name: "irene-boot"}}))
	obj2 := waitReady(t, ns, "reached", 30*time.Second)
	simulateCrashMidRedemption(t, obj2, true)
	o2 := waitReason(t, ns, "reached", authv1alpha1.ConditionRenewalFailing, metav1.ConditionTrue, authv1alpha1.ReasonRefreshTokenInvalid, waitForRotation)
	if !slices.Contains(userSession("irene"), obj2.Status.SessionID) {
		t.Error("the session ended: the operator redeemed a refresh token Keycloak had already rotated")
	}
	if secretToken(getSecret(t, ns, "reached")) == "" {
		t.Error("the consumer Secret lost its token")
	}
	t.Logf("after the consumed redemption: %s", condMessage(t, o2, authv1alpha1.ConditionRenewalFailing))
	deleteAndWait(t, get(t, ns, "notreached"), 30*time.Second)
	deleteAndWait(t, get(t, ns, "reached"), 30*time.Second)
}

func condStatus(o *authv1alpha1.MLflowAccessToken, typ string) metav1.ConditionStatus {
	if c := cond(o, typ); c != nil {
		return c.Status
	}
	return metav1.ConditionUnknown
}
