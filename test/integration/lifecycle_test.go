package integration

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// The main promise: a client-credentials token from the real Keycloak lands in the Secret,
// rotates before it expires, and is revoked when the resource is deleted.
// Not parallel: it counts the Keycloak calls of the whole realm against its rotations, which
// resources created and deleted meanwhile by parallel tests would skew.
func TestClientCredentialsLifecycle(t *testing.T) {
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	obj := newToken(ns, "train", func(o *authv1alpha1.MLflowAccessToken) {
		o.Labels = map[string]string{"argocd.argoproj.io/instance": "team-a"}
		o.Spec.SecretName = "train-token"
		o.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{Labels: map[string]authv1alpha1.LabelValue{"team": "a"}}
		o.Spec.MLflow = &authv1alpha1.MLflowSpec{TrackingURI: "http://127.0.0.1:5000"}
	})
	create(t, obj)

	obj = waitReady(t, ns, "train", 30*time.Second)
	s := getSecret(t, ns, "train-token")
	if s == nil {
		t.Fatal("Secret not created")
	}

	// The Secret: our label and the template's, not the resource's; owned by the resource.
	if s.Labels[tokensecret.LabelManagedBy] != tokensecret.ManagedByValue || s.Labels["team"] != "a" {
		t.Errorf("Secret labels = %v", s.Labels)
	}
	if _, copied := s.Labels["argocd.argoproj.io/instance"]; copied {
		t.Error("the resource's labels were copied onto the Secret")
	}
	if ref := metav1.GetControllerOf(s); ref == nil || ref.UID != obj.UID {
		t.Errorf("Secret controller reference = %+v", ref)
	}
	if string(s.Data["MLFLOW_TRACKING_URI"]) != "http://127.0.0.1:5000" ||
		string(s.Data["MLFLOW_TRACKING_TOKEN"]) != secretToken(s) {
		t.Errorf("Secret keys wrong: %v", keys(s.Data))
	}

	// The token is a JWT for our client whose exp matches status.expiresAt.
	claims := jwtPayload(t, secretToken(s))
	if claims["azp"] != clientID {
		t.Errorf("azp = %v, want %s", claims["azp"], clientID)
	}
	exp := int64(claims["exp"].(float64))
	if d := exp - obj.Status.ExpiresAt.Unix(); d < 0 || d > 1 {
		t.Errorf("JWT exp %d vs status.expiresAt %s: off by %ds", exp, obj.Status.ExpiresAt, d)
	}
	if string(s.Data["expiresAt"]) != obj.Status.ExpiresAt.UTC().Format(time.RFC3339) {
		t.Errorf("Secret expiresAt %q vs status %s", s.Data["expiresAt"], obj.Status.ExpiresAt)
	}
	if obj.Status.Token == nil || obj.Status.Token.PreferredUsername != "service-account-"+clientID ||
		obj.Status.Token.AuthorizedParty != clientID || obj.Status.Token.ID != claims["jti"] {
		t.Errorf("status.token = %+v", obj.Status.Token)
	}
	if !slices.Contains(obj.Status.Token.Audience, "mlflow") {
		t.Errorf("status.token.audience = %v, want it to contain mlflow (audience mapper)", obj.Status.Token.Audience)
	}
	checkRenewalWindow(t, obj)
	if !introspect(t, secretToken(s)) {
		t.Error("the issued token is not active at Keycloak")
	}

	// At least three rotations, each a different token, each before the previous expired,
	// and the Secret updated in place (same UID).
	ccBefore, allBefore := kcCalls.count(realm, "client_credentials"), realmRotations(t)
	seen := map[string]bool{secretToken(s): true}
	uid := s.UID
	prevExp := obj.Status.ExpiresAt.Time
	for i := range 3 {
		var next string
		testenv.Eventually(t, waitForRotation, "rotation", func() (bool, string) {
			cur := getSecret(t, ns, "train-token")
			next = secretToken(cur)
			return next != "" && !seen[next], "token unchanged"
		})
		seen[next] = true
		cur := getSecret(t, ns, "train-token")
		// When the new token was obtained (recorded by the operator), not when this poll saw it:
		// on a loaded machine the poll may lag.
		if issued, err := time.Parse(time.RFC3339, cur.Annotations[tokensecret.AnnotationIssuedAt]); err != nil || issued.After(prevExp) {
			t.Errorf("rotation %d: issued at %v (%v), after the previous token expired at %s", i+1, issued, err, prevExp)
		}
		if cur.UID != uid {
			t.Fatalf("the Secret was re-created (UID %s → %s); it must be updated in place", uid, cur.UID)
		}
		obj = waitReady(t, ns, "train", 10*time.Second)
		// The expiry of the token just seen, from its Secret: status may still describe the
		// previous one for a moment (the Secret is written first).
		if exp, err := time.Parse(time.RFC3339, string(cur.Data["expiresAt"])); err == nil {
			prevExp = exp
		}
	}
	obj = get(t, ns, "train")
	if obj.Status.Rotations < 4 {
		t.Errorf("status.rotations = %d, want ≥ 4", obj.Status.Rotations)
	}
	// One Keycloak call per rotation. Every client-credentials resource of the realm counts (other
	// tests' resources keep rotating), so the calls are compared with the rotations of all of them;
	// a rotation in flight at either snapshot may be counted on one side only.
	calls, rotations, inFlight := kcCalls.count(realm, "client_credentials")-ccBefore, realmRotations(t)-allBefore, realmResources(t)
	t.Logf("rotations seen: %d; Keycloak calls per rotation across the realm: %.2f (%d calls, %d rotations)", len(seen),
		float64(calls)/float64(max(rotations, 1)), calls, rotations)
	if calls < rotations-inFlight || calls > rotations+inFlight {
		t.Errorf("%d client-credentials calls for %d rotations (±%d in flight): want one call per rotation", calls, rotations, inFlight)
	}

	// Routine rotations are one Event series, not one Event (one API write) per rotation.
	testenv.Eventually(t, 30*time.Second, "the Renewed events folded into one series", func() (bool, string) {
		var l corev1.EventList
		if err := k8s.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var renewed []corev1.Event
		for _, e := range l.Items {
			if e.Reason == "Renewed" && e.InvolvedObject.Name == "train" {
				renewed = append(renewed, e)
			}
		}
		if len(renewed) != 1 {
			return false, fmt.Sprintf("%d Renewed Events for %d routine rotations, want 1", len(renewed), obj.Status.Rotations-1)
		}
		if e := renewed[0]; e.Series == nil || e.Series.Count < 2 {
			return false, fmt.Sprintf("Renewed Event without a series of ≥ 2: series %+v, message %q", e.Series, e.Message)
		}
		return true, ""
	})

	// Delete: the last token is revoked (inactive at Keycloak), the Secret is gone.
	last := secretToken(getSecret(t, ns, "train-token"))
	deleteAndWait(t, obj, 30*time.Second)
	if introspect(t, last) {
		t.Error("the last token is still active after the resource was deleted")
	}
	if getSecret(t, ns, "train-token") != nil {
		t.Error("the Secret still exists after the resource was deleted")
	}
	if getSecret(t, ns, "kc-client") == nil {
		t.Error("the user's client secret was deleted")
	}
}

// checkRenewalWindow asserts the renewal time lies in the default window: two thirds of the
// lifetime minus at most 10% jitter, truncated to seconds.
func checkRenewalWindow(t *testing.T, obj *authv1alpha1.MLflowAccessToken) {
	t.Helper()
	st := obj.Status
	life := st.ExpiresAt.Sub(st.IssuedAt.Time).Seconds()
	got := st.RenewalTime.Sub(st.IssuedAt.Time).Seconds()
	lo, hi := math.Floor(life*(2.0/3-0.1))-1, math.Ceil(life*2.0/3)+1
	if got < lo || got > hi {
		t.Errorf("renewal %.0fs after issue, want within [%.0f, %.0f] for a %.0fs lifetime", got, lo, hi, life)
	}
}

func TestWrongClientSecret(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", "not-the-secret")
	create(t, newToken(ns, "bad"))
	obj := waitReason(t, ns, "bad", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonInvalidClientCredentials, 30*time.Second)
	if c := cond(obj, authv1alpha1.ConditionRenewalFailing); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("RenewalFailing = %+v", c)
	}
	if obj.Status.FailedAttempts < 1 || obj.Status.LastFailureTime == nil || obj.Status.RenewalTime == nil {
		t.Errorf("failure bookkeeping missing: %+v", obj.Status)
	}
	if getSecret(t, ns, "bad") != nil {
		t.Error("a Secret was written although no token was obtained")
	}
	// The retries (their timing is the scenario tests' business, with a fake clock) are one
	// Warning series, not an Event per attempt.
	testenv.Eventually(t, 30*time.Second, "three failed attempts", func() (bool, string) {
		n := get(t, ns, "bad").Status.FailedAttempts
		return n >= 3, fmt.Sprintf("%d attempts", n)
	})
	testenv.Eventually(t, 10*time.Second, "the retries folded into one Warning series", func() (bool, string) {
		var l corev1.EventList
		if err := k8s.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		n, series := 0, false
		for _, e := range l.Items {
			if e.Reason == authv1alpha1.ReasonInvalidClientCredentials && e.InvolvedObject.Name == "bad" {
				n++
				series = series || e.Series != nil || e.Count > 1
			}
		}
		return n == 1 && series, fmt.Sprintf("%d Warning events (series: %v)", n, series)
	})
	// Fixing the secret heals the resource without touching it.
	s := getSecret(t, ns, "kc-client")
	s.Data["client-secret"] = []byte(clientSecret)
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, "bad", 30*time.Second)
	deleteAndWait(t, get(t, ns, "bad"), 30*time.Second)
}

func TestMissingClientSecret(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, newToken(ns, "nosecret"))
	obj := waitReason(t, ns, "nosecret", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonClientSecretNotFound, 30*time.Second)
	if c := cond(obj, authv1alpha1.ConditionReady); c == nil || !strings.Contains(c.Message, `"kc-client"`) {
		t.Errorf("message does not name the missing Secret: %+v", c)
	}
	if getSecret(t, ns, "nosecret") != nil {
		t.Error("a Secret was written although no token was obtained")
	}

	// A Secret without the key is reported too, naming the keys it has.
	if err := k8s.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "kc-client", Namespace: ns},
		StringData: map[string]string{"clientSecret": clientSecret},
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "missing-key message", func() (bool, string) {
		c := cond(get(t, ns, "nosecret"), authv1alpha1.ConditionReady)
		return c != nil && strings.Contains(c.Message, `has no key "client-secret"`) && strings.Contains(c.Message, "clientSecret"), c.Message
	})
	deleteAndWait(t, obj, 30*time.Second)
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// realmClientCredentials lists the client-credentials resources of the test realm.
func realmClientCredentials(t *testing.T) []authv1alpha1.MLflowAccessToken {
	t.Helper()
	var l authv1alpha1.MLflowAccessTokenList
	if err := k8s.List(context.Background(), &l); err != nil {
		t.Fatal(err)
	}
	var out []authv1alpha1.MLflowAccessToken
	for _, o := range l.Items {
		if o.Spec.Keycloak.Realm == realm && o.Spec.Grant.Type == authv1alpha1.GrantClientCredentials {
			out = append(out, o)
		}
	}
	return out
}

// realmRotations sums the rotations of the realm's client-credentials resources.
func realmRotations(t *testing.T) int {
	n := 0
	for _, o := range realmClientCredentials(t) {
		n += int(o.Status.Rotations)
	}
	return n
}

func realmResources(t *testing.T) int { return len(realmClientCredentials(t)) }
