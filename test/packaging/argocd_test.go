package packaging

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

const argoHealthKey = "resource.customizations.health.auth.mlflow-token-operator.io_MLflowAccessToken"

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error"`
}

// argoHealth runs config/argocd/health.lua over the objects as Argo CD would (bin/tools/argocd-lua:
// gopher-lua, Argo CD's library set, the object as `obj`).
func argoHealth(t *testing.T, objs []*authv1alpha1.MLflowAccessToken) []health {
	t.Helper()
	in, err := json.Marshal(objs)
	if err != nil {
		t.Fatal(err)
	}
	var out []health
	script := filepath.Join(repoRoot(t), "config", "argocd", "health.lua")
	if err := json.Unmarshal(run(t, in, tool(t, "argocd-lua"), script), &out); err != nil {
		t.Fatal(err)
	}
	if len(out) != len(objs) {
		t.Fatalf("%d results for %d objects", len(out), len(objs))
	}
	return out
}

// tokenAt builds an MLflowAccessToken as the API server stores it after the operator's status
// writes: the conditions are set the way controllers/normal.go sets them (meta.SetStatusCondition,
// observedGeneration stamped), serialised through the API types.
type tokenAt struct {
	obj *authv1alpha1.MLflowAccessToken
	now time.Time
}

func newToken(generation int64) *tokenAt {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	return &tokenAt{now: now, obj: &authv1alpha1.MLflowAccessToken{
		TypeMeta: metav1.TypeMeta{APIVersion: authv1alpha1.GroupVersion.String(), Kind: "MLflowAccessToken"},
		ObjectMeta: metav1.ObjectMeta{Name: "training-token", Namespace: "team-a", Generation: generation,
			CreationTimestamp: metav1.NewTime(now.Add(-time.Hour))},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			Keycloak: &authv1alpha1.KeycloakSpec{URL: "https://keycloak.example.com", Realm: "mlflow", ClientID: "mlflow-training",
				ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "mlflow-training-client", Key: "client-secret"}},
			Grant: authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		},
	}}
}

func (k *tokenAt) observed() *tokenAt {
	k.obj.Status.ObservedGeneration = k.obj.Generation
	return k
}

func (k *tokenAt) cond(typ string, status bool, reason, msg string) *tokenAt {
	st := metav1.ConditionFalse
	if status {
		st = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&k.obj.Status.Conditions, metav1.Condition{Type: typ, Status: st, Reason: reason, Message: msg,
		ObservedGeneration: k.obj.Generation, LastTransitionTime: metav1.NewTime(k.now)})
	return k
}

// valid records a token issued at k.now, as markValid does.
func (k *tokenAt) valid() *tokenAt {
	s := &k.obj.Status
	exp, renew := k.now.Add(5*time.Minute), k.now.Add(200*time.Second)
	s.SecretName, s.Rotations = "training-token", s.Rotations+1
	s.IssuedAt, s.ExpiresAt, s.RenewalTime = ptr(k.now), ptr(exp), ptr(renew)
	s.FailedAttempts, s.LastFailureTime = 0, nil
	s.Token = &authv1alpha1.TokenInfo{ID: fmt.Sprintf("jti-%d", s.Rotations), Issuer: "https://keycloak.example.com/realms/mlflow",
		PreferredUsername: "service-account-mlflow-training", Audience: []string{"mlflow"}}
	k.cond(authv1alpha1.ConditionReady, true, authv1alpha1.ReasonTokenValid, fmt.Sprintf("Token in Secret training-token is valid until %s; renewal at %s",
		exp.Format(time.RFC3339), renew.Format(time.RFC3339)))
	return k.cond(authv1alpha1.ConditionRenewalFailing, false, authv1alpha1.ReasonRenewalSucceeded, "The last attempt to obtain a token succeeded")
}

// failed records a failed attempt, as fail does: Ready stays True while the token is valid.
func (k *tokenAt) failed(reason, msg string) *tokenAt {
	s := &k.obj.Status
	s.FailedAttempts++
	s.LastFailureTime = ptr(k.now)
	s.RenewalTime = ptr(k.now.Add(4 * time.Second))
	k.cond(authv1alpha1.ConditionRenewalFailing, true, reason, fmt.Sprintf("%s (attempt %d; next attempt at %s)", msg, s.FailedAttempts,
		s.RenewalTime.Format(time.RFC3339)))
	if s.ExpiresAt != nil && k.now.Before(s.ExpiresAt.Time) {
		return k.cond(authv1alpha1.ConditionReady, true, authv1alpha1.ReasonRenewalFailing,
			fmt.Sprintf("Renewal failing (%s) but the token in Secret training-token is valid until %s", reason, s.ExpiresAt.Format(time.RFC3339)))
	}
	if s.ExpiresAt != nil {
		msg = fmt.Sprintf("the token expired at %s and no new one could be obtained: %s", s.ExpiresAt.Format(time.RFC3339), msg)
	}
	return k.cond(authv1alpha1.ConditionReady, false, reason, msg)
}

func (k *tokenAt) after(d time.Duration) *tokenAt { k.now = k.now.Add(d); return k }

func ptr(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }

// TestArgoCDHealthCheck runs the Lua health check over the status shapes the operator writes,
// covering every branch; routine rotations must stay Healthy.
func TestArgoCDHealthCheck(t *testing.T) {
	deleting := newToken(1).observed().valid()
	deleting.obj.DeletionTimestamp = ptr(deleting.now)
	deleting.obj.Finalizers = []string{"auth.mlflow-token-operator.io/revoke"}
	deleting.cond(authv1alpha1.ConditionReady, false, authv1alpha1.ReasonRevocationFailing, "revoking the current token: Keycloak unreachable")

	staleCondition := newToken(3).observed().valid()
	staleCondition.obj.Status.Conditions[0].ObservedGeneration = 2

	cases := []struct {
		name, want, msgHas string
		tok                *tokenAt
	}{
		{"created, no status yet", "Progressing", "Waiting", newToken(1)},
		{"spec edited, not yet observed", "Progressing", "generation 2", func() *tokenAt {
			k := newToken(1).observed().valid()
			k.obj.Generation = 2
			return k
		}()},
		{"observed, no Ready condition yet", "Progressing", "Ready", newToken(1).observed()},
		{"Ready condition from an older generation", "Progressing", "generation 3", staleCondition},
		{"first attempt pending", "Progressing", "", newToken(1).observed().cond(authv1alpha1.ConditionReady, false, authv1alpha1.ReasonIssuing, "Obtaining the first token")},
		{"Ready unknown", "Progressing", "", func() *tokenAt {
			k := newToken(1).observed()
			k.obj.Status.Conditions = []metav1.Condition{{Type: authv1alpha1.ConditionReady, Status: metav1.ConditionUnknown,
				Reason: "Unknown", ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(k.now)}}
			return k
		}()},
		{"valid token", "Healthy", "valid until", newToken(1).observed().valid()},
		{"renewal failing, token still valid", "Healthy", "KeycloakUnreachable",
			newToken(1).observed().valid().after(200*time.Second).failed(authv1alpha1.ReasonKeycloakUnreachable, "dial tcp: connection refused")},
		{"refresh chain expiring soon, token valid", "Healthy", "valid until", newToken(1).observed().valid().
			cond(authv1alpha1.ConditionRefreshChainExpiring, true, authv1alpha1.ReasonChainExpiring, "The refresh chain ends at …")},
		{"never obtained: wrong client secret", "Degraded", authv1alpha1.ReasonInvalidClientCredentials,
			newToken(1).observed().failed(authv1alpha1.ReasonInvalidClientCredentials, "Keycloak rejected the client credentials")},
		{"expired while renewal kept failing", "Degraded", "expired",
			newToken(1).observed().valid().after(6*time.Minute).failed(authv1alpha1.ReasonKeycloakTimeout, "no answer within 15s")},
		{"client secret missing", "Degraded", authv1alpha1.ReasonClientSecretNotFound,
			newToken(1).observed().failed(authv1alpha1.ReasonClientSecretNotFound, "Secret mlflow-training-client not found")},
		{"deleting, revocation retried", "Progressing", "revoking", deleting},
	}
	var objs []*authv1alpha1.MLflowAccessToken
	for _, c := range cases {
		objs = append(objs, c.tok.obj)
	}
	for i, got := range argoHealth(t, objs) {
		c := cases[i]
		if got.Error != "" {
			t.Errorf("%s: the script failed: %s", c.name, got.Error)
			continue
		}
		if got.Status != c.want || !strings.Contains(got.Message, c.msgHas) {
			t.Errorf("%s: got %s %q, want %s with a message containing %q", c.name, got.Status, got.Message, c.want, c.msgHas)
		}
	}

	// A day of routine rotations (every 200 s, the status rewritten each time, the generation
	// unchanged) and a recovered failure: Healthy at every step, never Progressing.
	k := newToken(4).observed().valid()
	var timeline []*authv1alpha1.MLflowAccessToken
	for i := 0; i < 432; i++ {
		k.after(200 * time.Second).valid()
		if i == 100 {
			k.after(time.Second).failed(authv1alpha1.ReasonKeycloakError, "503 Service Unavailable")
		}
		timeline = append(timeline, k.obj.DeepCopy())
	}
	for i, got := range argoHealth(t, timeline) {
		if got.Status != "Healthy" {
			t.Fatalf("rotation %d (rotations=%d): %s %q %s, want Healthy", i, timeline[i].Status.Rotations, got.Status, got.Message, got.Error)
		}
	}
}

// TestArgoCDConfigMapSnippet: config/argocd/argocd-cm.yaml carries health.lua verbatim under the
// key Argo CD looks up for this group and kind.
func TestArgoCDConfigMapSnippet(t *testing.T) {
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(mustRead(t, "config/argocd/argocd-cm.yaml"), &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Name != "argocd-cm" {
		t.Errorf("the snippet patches %q, want argocd-cm", cm.Name)
	}
	want := authv1alpha1.GroupVersion.Group + "_MLflowAccessToken"
	if !strings.HasSuffix(argoHealthKey, want) {
		t.Fatalf("key %s does not end in %s", argoHealthKey, want)
	}
	got, ok := cm.Data[argoHealthKey]
	if !ok {
		t.Fatalf("argocd-cm.yaml has no key %s (keys: %v)", argoHealthKey, cm.Data)
	}
	if script := string(mustRead(t, "config/argocd/health.lua")); got != script {
		t.Error("the script in config/argocd/argocd-cm.yaml differs from config/argocd/health.lua")
	}
}
