package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// A resource in namespace A cannot make the operator read or write a Secret in namespace B:
// references carry no namespace (admission rejects one, see the admission test) and resolve in A.
func TestCrossNamespaceIsolation(t *testing.T) {
	t.Parallel()
	a, b := newNamespace(t), newNamespace(t)
	createClientSecret(t, b, "kc-client", clientSecret) // the right secret, but in B
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "victim", Namespace: b}, StringData: map[string]string{"x": "y"}})
	create(t, newToken(a, "intruder", func(o *authv1alpha1.MLflowAccessToken) { o.Spec.SecretName = "victim" }))
	obj := waitReason(t, a, "intruder", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonClientSecretNotFound, 30*time.Second)
	if msg := condMessage(t, obj, authv1alpha1.ConditionReady); !strings.Contains(msg, "namespace "+a) {
		t.Errorf("message should name the resource's namespace: %q", msg)
	}
	if v := getSecret(t, b, "victim"); v == nil || string(v.Data["x"]) != "y" || len(v.Data) != 1 {
		t.Error("the Secret in the other namespace was touched")
	}
	if getSecret(t, a, "victim") != nil {
		t.Error("a Secret was written without a token")
	}
	deleteAndWait(t, obj, 30*time.Second)
	if getSecret(t, b, "victim") == nil || getSecret(t, b, "kc-client") == nil {
		t.Error("deletion removed a Secret of the other namespace")
	}
}

// The consumer Secret deleted or edited by hand is restored; a Secret of the same name that the
// operator does not own is never taken over.
func TestConsumerSecretRestored(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	create(t, newToken(ns, "restore"))
	waitReady(t, ns, "restore", 30*time.Second)

	s := getSecret(t, ns, "restore")
	if err := k8s.Delete(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the deleted Secret restored", func() (bool, string) {
		n := getSecret(t, ns, "restore")
		return n != nil && n.UID != s.UID && secretToken(n) != "", "not yet"
	})

	s = getSecret(t, ns, "restore")
	s.Data[tokensecret.KeyToken] = []byte("tampered")
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the edited Secret restored", func() (bool, string) {
		n := getSecret(t, ns, "restore")
		_, ok := tokensecret.Read(n)
		return ok && secretToken(n) != "tampered", "still tampered"
	})
	waitReady(t, ns, "restore", 20*time.Second)

	// Someone else's Secret of the target name: SecretConflict, untouched.
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: ns}, StringData: map[string]string{"mine": "yes"}})
	create(t, newToken(ns, "taker", func(o *authv1alpha1.MLflowAccessToken) { o.Spec.SecretName = "taken" }))
	waitReason(t, ns, "taker", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict, 30*time.Second)
	if v := getSecret(t, ns, "taken"); string(v.Data["mine"]) != "yes" || len(v.Data) != 1 {
		t.Error("the operator wrote into a Secret it does not own")
	}
	deleteAndWait(t, get(t, ns, "taker"), 30*time.Second)
	if getSecret(t, ns, "taken") == nil {
		t.Error("deletion removed a Secret the operator does not own")
	}
	deleteAndWait(t, get(t, ns, "restore"), 30*time.Second)
}

// Changes while the resource lives: the client secret Secret deleted (clear reason, token kept),
// then restored; the spec changed mid-rotation (new token at once, no stuck state); the Secret
// name changed (the new Secret gets a token, the old one goes).
func TestInputAndSpecChanges(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	create(t, newToken(ns, "changing"))
	obj := waitReady(t, ns, "changing", 30*time.Second)
	tok := secretToken(getSecret(t, ns, "changing"))

	if err := k8s.Delete(context.Background(), getSecret(t, ns, "kc-client")); err != nil {
		t.Fatal(err)
	}
	obj = waitReason(t, ns, "changing", authv1alpha1.ConditionRenewalFailing, metav1.ConditionTrue, authv1alpha1.ReasonClientSecretNotFound, 30*time.Second)
	if s := getSecret(t, ns, "changing"); s == nil || (secretToken(s) != tok && time.Now().Before(obj.Status.ExpiresAt.Time)) {
		t.Error("the valid token was lost when the client secret disappeared")
	}
	createClientSecret(t, ns, "kc-client", clientSecret)
	obj = waitReady(t, ns, "changing", 30*time.Second)

	// Spec change: new scopes → a new token at once, carrying them.
	before := obj.Status.Rotations
	obj.Spec.Grant.Scopes = []string{"email"}
	if err := k8s.Update(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "a token for the new spec", func() (bool, string) {
		o := get(t, ns, "changing")
		r := cond(o, authv1alpha1.ConditionReady)
		return o.Status.Rotations > before && r != nil && r.ObservedGeneration == o.Generation && r.Status == metav1.ConditionTrue, "waiting"
	})

	// Secret name change: the token moves, the old Secret is deleted.
	obj = get(t, ns, "changing")
	obj.Spec.SecretName = "changing-v2"
	if err := k8s.Update(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the token in the renamed Secret", func() (bool, string) {
		return secretToken(getSecret(t, ns, "changing-v2")) != "" && getSecret(t, ns, "changing") == nil, "waiting"
	})
	if get(t, ns, "changing").Status.SecretName != "changing-v2" {
		t.Error("status.secretName not updated")
	}
	deleteAndWait(t, get(t, ns, "changing"), 30*time.Second)
	if getSecret(t, ns, "changing-v2") != nil {
		t.Error("the renamed Secret survived deletion")
	}
}
