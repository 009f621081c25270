package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

func createClientSecret(t *testing.T, ns, name, value string) {
	t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		StringData: map[string]string{"client-secret": value},
	}
	if err := k8s.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

func newToken(ns, name string, mutate ...func(*authv1alpha1.MLflowAccessToken)) *authv1alpha1.MLflowAccessToken {
	obj := &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			Keycloak: &authv1alpha1.KeycloakSpec{
				URL: kcServer.URL(), Realm: realm, ClientID: clientID,
				ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "kc-client", Key: "client-secret"},
			},
			Grant: authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		},
	}
	for _, m := range mutate {
		m(obj)
	}
	return obj
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, ns, name string) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	obj := &authv1alpha1.MLflowAccessToken{}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

// getSecret returns the Secret or nil when it does not exist.
func getSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	seenTokens.add(string(s.Data[tokensecret.KeyToken]))
	return s
}

// seenTokens collects every token the tests saw, for the leak test.
var seenTokens = &tokenSet{m: map[string]bool{}}

type tokenSet struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *tokenSet) add(tok string) {
	if tok == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[tok] = true
}

func (s *tokenSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.m {
		out = append(out, k)
	}
	return out
}

func secretToken(s *corev1.Secret) string {
	if s == nil {
		return ""
	}
	return string(s.Data[tokensecret.KeyToken])
}

func cond(obj *authv1alpha1.MLflowAccessToken, typ string) *metav1.Condition {
	return meta.FindStatusCondition(obj.Status.Conditions, typ)
}

// condMessage is the message of a condition the test expects to be there; a missing one fails
// the test with what the status holds instead.
func condMessage(t *testing.T, obj *authv1alpha1.MLflowAccessToken, typ string) string {
	t.Helper()
	c := cond(obj, typ)
	if c == nil {
		t.Fatalf("%s/%s has no %s condition; conditions: %+v", obj.Namespace, obj.Name, typ, obj.Status.Conditions)
	}
	return c.Message
}

// waitReady waits for Ready=True with reason TokenValid and returns the object.
func waitReady(t *testing.T, ns, name string, timeout time.Duration) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	var obj *authv1alpha1.MLflowAccessToken
	testenv.Eventually(t, timeout, name+" Ready", func() (bool, string) {
		obj = get(t, ns, name)
		c := cond(obj, authv1alpha1.ConditionReady)
		if c == nil {
			return false, "no Ready condition"
		}
		return c.Status == metav1.ConditionTrue && c.Reason == authv1alpha1.ReasonTokenValid &&
			c.ObservedGeneration == obj.Generation, c.Reason + ": " + c.Message
	})
	return obj
}

// waitReason waits until condition typ has the given status and reason.
func waitReason(t *testing.T, ns, name, typ string, status metav1.ConditionStatus, reason string, timeout time.Duration) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	var obj *authv1alpha1.MLflowAccessToken
	testenv.Eventually(t, timeout, typ+"="+string(status)+"/"+reason, func() (bool, string) {
		obj = get(t, ns, name)
		c := cond(obj, typ)
		if c == nil {
			return false, "no condition " + typ
		}
		return c.Status == status && c.Reason == reason, string(c.Status) + " " + c.Reason + ": " + c.Message
	})
	return obj
}

// deleteAndWait deletes obj and waits until the API server no longer has it.
func deleteAndWait(t *testing.T, obj client.Object, timeout time.Duration) {
	t.Helper()
	if err := k8s.Delete(context.Background(), obj); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, "deletion of "+obj.GetName(), func() (bool, string) {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
		return apierrors.IsNotFound(err), "still present, finalizers " + strings.Join(obj.GetFinalizers(), ",")
	})
}

// introspect asks Keycloak whether a token is active (RFC 7662), authenticating as the client.
func introspect(t *testing.T, token string) bool {
	t.Helper()
	return introspectAt(t, realm, token, "")
}

// introspectAt asks the given realm, with an optional token_type_hint.
func introspectAt(t *testing.T, realmName, token, hint string) bool {
	t.Helper()
	active, err := keycloak.Introspect(kcServer.URL(), realmName, clientID, clientSecret, token, hint)
	if err != nil {
		t.Fatal(err)
	}
	return active
}

// jwtPayload decodes a JWT's claims without verification.
func jwtPayload(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	b, err := base64URL(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func base64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func keyOf(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
