package fault

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

func getSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		return nil
	}
	return &s
}

func getToken(t *testing.T, ns, name string) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	var obj authv1alpha1.MLflowAccessToken
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &obj); err != nil {
		t.Fatal(err)
	}
	return &obj
}

// until polls f every 200 ms and fails the test with what after timeout.
func until(t *testing.T, timeout time.Duration, what string, f func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !f() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return time.Since(start)
}

// The user's input Secret deleted while the resource lives, the consumer Secret deleted and
// edited by hand, and the spec changed while a refresh grant is on the wire: readable reasons,
// the token kept, the Secret restored, a new token for the new spec, nothing stuck. Runs against
// the operator binary (test/integration covers some of this in-process).
func TestSecretsAndSpecChanges(t *testing.T) {
	ns := newNamespace(t, "secrets")
	namespaces := []string{ns}
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "own-client", Namespace: ns},
		StringData: map[string]string{"client-secret": clientSecret}})
	input := ccToken(ns, "input")
	input.Spec.Keycloak.ClientSecretRef.Name = "own-client"
	create(t, input)
	create(t, ccToken(ns, "consumer"))
	create(t, rtToken(t, ns, "spec", 0))
	create(t, ccToken(ns, "spec-cc"))
	op := startOperator(t, "op", namespaces)
	op.waitMetrics(t, time.Minute)
	waitAllReady(t, namespaces, 4, 2*time.Minute)
	w := watchSecrets(t, namespaces, 300*time.Millisecond)

	// 1. The input Secret deleted: the next renewal fails with ClientSecretNotFound, the Secret
	// keeps its token; the input Secret back: healed.
	tok := string(getSecret(t, ns, "input").Data[tokensecret.KeyToken])
	if err := k8s.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "own-client", Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	var failMsg string
	d := until(t, 2*tokenLifespan, "RenewalFailing ClientSecretNotFound", func() bool {
		c := cond(getToken(t, ns, "input"), authv1alpha1.ConditionRenewalFailing)
		if c != nil && c.Status == metav1.ConditionTrue {
			failMsg = c.Reason + ": " + c.Message
			return c.Reason == authv1alpha1.ReasonClientSecretNotFound
		}
		return false
	})
	if s := getSecret(t, ns, "input"); s == nil || string(s.Data[tokensecret.KeyToken]) != tok {
		t.Errorf("the consumer Secret lost its token when the input Secret was deleted")
	}
	t.Logf("FIGURE input Secret deleted: %q after %s; token kept", failMsg, fmtDur(d))
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "own-client", Namespace: ns},
		StringData: map[string]string{"client-secret": clientSecret}})
	d = until(t, 30*time.Second, "input healed", func() bool { return isReady(getToken(t, ns, "input")) })
	t.Logf("FIGURE input Secret re-created: Ready after %s", fmtDur(d))

	// 2. The consumer Secret deleted by hand: restored.
	if err := k8s.Delete(context.Background(), getSecret(t, ns, "consumer")); err != nil {
		t.Fatal(err)
	}
	d = until(t, 30*time.Second, "consumer Secret restored", func() bool {
		s := getSecret(t, ns, "consumer")
		return s != nil && len(s.Data[tokensecret.KeyToken]) > 0 && isReady(getToken(t, ns, "consumer"))
	})
	t.Logf("FIGURE consumer Secret deleted by hand: restored after %s", fmtDur(d))

	// 3. The consumer Secret edited by hand: restored.
	s := getSecret(t, ns, "consumer")
	s.Data[tokensecret.KeyToken] = []byte("tampered")
	s.Data[tokensecret.KeyTrackingToken] = []byte("tampered")
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	d = until(t, 30*time.Second, "consumer Secret repaired", func() bool {
		s := getSecret(t, ns, "consumer")
		return s != nil && string(s.Data[tokensecret.KeyToken]) != "tampered" && string(s.Data[tokensecret.KeyTrackingToken]) != "tampered" &&
			s.Annotations[tokensecret.AnnotationTokenHash] == tokensecret.Hash(string(s.Data[tokensecret.KeyToken]))
	})
	t.Logf("FIGURE consumer Secret edited by hand: restored after %s", fmtDur(d))

	// 4. The spec changed while a refresh grant is on the wire (RefreshToken, strict realm), and
	// at random moments for client credentials: a new token for the new spec each time.
	proxy.ResetCounts()
	changes := pick(3, 10)
	scopes := [][]string{{"openid"}, nil}
	for i := 0; i < changes; i++ {
		want := scopes[i%2]
		issuedFor := map[string]string{}
		for _, name := range []string{"spec", "spec-cc"} {
			issuedFor[name] = getSecret(t, ns, name).Annotations[tokensecret.AnnotationIssuedFor]
		}
		changed := make(chan struct{})
		proxy.OnNextRefresh(HookThenForward, func(string) {
			defer close(changed)
			for _, name := range []string{"spec", "spec-cc"} {
				err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
					obj := getToken(t, ns, name)
					obj.Spec.Grant.Scopes = want
					return k8s.Update(context.Background(), obj)
				})
				if err != nil {
					t.Errorf("updating %s: %v", name, err)
				}
			}
		})
		select {
		case <-changed:
		case <-time.After(time.Minute):
			t.Fatal("no refresh grant within a minute")
		}
		d := until(t, time.Minute, "a new token for the new spec", func() bool {
			for _, name := range []string{"spec", "spec-cc"} {
				obj := getToken(t, ns, name)
				sec := getSecret(t, ns, name)
				if !isReady(obj) || sec == nil || sec.Annotations[tokensecret.AnnotationIssuedFor] == issuedFor[name] {
					return false
				}
			}
			return true
		})
		t.Logf("FIGURE spec change %d (scopes %v) while a refresh grant is on the wire: both resources Ready with a token issued for the new spec after %s", i+1, want, fmtDur(d))
	}
	time.Sleep(tokenLifespan)
	waitAllReady(t, namespaces, 4, time.Minute)
	w.Stop()
	blanked, deleted, _, _, _ := w.Snapshot()
	c := proxy.Counts()
	alive, broken, why := chainsAlive(t, namespaces)
	t.Logf("FIGURE spec changes mid-rotation: changes=%d double_redemptions=%d refresh_invalid_grant=%d chains_alive=%d chains_broken=%d; secrets blanked=%d deleted by the operator=%d (1 deletion by hand expected)",
		changes, c.DoubleRedemptions, c.RefreshInvalidGrant, alive, broken, blanked, deleted)
	if c.DoubleRedemptions != 0 || c.RefreshInvalidGrant != 0 || broken != 0 {
		t.Errorf("double redemptions %d, invalid_grant %d, broken chains %d: %v", c.DoubleRedemptions, c.RefreshInvalidGrant, broken, why)
	}
	// The watcher may see the hand deletion (1) and the hand edit (not a blank).
	if blanked != 0 || deleted > 1 {
		t.Errorf("blanked %d, deleted %d", blanked, deleted)
	}
}
