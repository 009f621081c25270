package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// Keycloak stopped mid-life: the Secret keeps its token (never blanked, never deleted), the
// conditions say what is wrong, and rotation resumes by itself once Keycloak is back.
func TestKeycloakOutage(t *testing.T) {
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	create(t, newToken(ns, "outage"))
	obj := waitReady(t, ns, "outage", 30*time.Second)
	tok := secretToken(getSecret(t, ns, "outage"))
	expiresAt := obj.Status.ExpiresAt.Time

	stopped := time.Now()
	if err := kcServer.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			// Leave Keycloak running for the tests after this one.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			_ = kcServer.Restart(ctx)
		}
	}()

	// The token is unchanged, whatever the controller tried.
	checkUntouched := func() {
		t.Helper()
		s := getSecret(t, ns, "outage")
		if s == nil {
			t.Fatal("the Secret was deleted during the outage")
		}
		if secretToken(s) != tok {
			t.Fatal("the Secret's token changed or was blanked during the outage")
		}
	}

	// While the token is still valid: Ready stays True with reason RenewalFailing.
	if time.Now().Before(expiresAt.Add(-2 * time.Second)) {
		testenv.Eventually(t, time.Until(expiresAt), "RenewalFailing while the token is valid", func() (bool, string) {
			o := get(t, ns, "outage")
			r, f := cond(o, authv1alpha1.ConditionReady), cond(o, authv1alpha1.ConditionRenewalFailing)
			if r == nil || f == nil {
				return false, "conditions missing"
			}
			return r.Status == metav1.ConditionTrue && r.Reason == authv1alpha1.ReasonRenewalFailing &&
				f.Status == metav1.ConditionTrue && f.Reason == authv1alpha1.ReasonKeycloakUnreachable, r.Reason + " / " + f.Reason + ": " + f.Message
		})
		checkUntouched()
	}

	// After expiry: Ready=False, reason KeycloakUnreachable, message says the token expired.
	obj = waitReason(t, ns, "outage", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonKeycloakUnreachable, tokenLifespan+20*time.Second)
	if c := cond(obj, authv1alpha1.ConditionReady); !strings.Contains(c.Message, "expired") {
		t.Errorf("Ready message does not say the token expired: %q", c.Message)
	}
	checkUntouched()
	attemptsDuringOutage := obj.Status.FailedAttempts

	// Keycloak back: the resource heals by itself.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := kcServer.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	back := time.Now()
	t.Logf("Keycloak down for %s; %d failed attempts recorded", back.Sub(stopped).Round(time.Second), attemptsDuringOutage)
	obj = waitReady(t, ns, "outage", 30*time.Second)
	t.Logf("Ready again %s after Keycloak was back", time.Since(back).Round(time.Millisecond))
	if secretToken(getSecret(t, ns, "outage")) == tok {
		t.Error("no new token after Keycloak came back")
	}
	if obj.Status.FailedAttempts != 0 {
		t.Errorf("failedAttempts = %d after recovery", obj.Status.FailedAttempts)
	}
	if c := cond(obj, authv1alpha1.ConditionRenewalFailing); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("RenewalFailing after recovery = %+v", c)
	}
	deleteAndWait(t, obj, 30*time.Second)
}
