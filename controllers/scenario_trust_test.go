package controllers

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak/keycloaktest"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// The trust scenarios play a tenant who may edit every Secret of their namespace (trust.go): each
// edit ends in a re-issue or a refusal with a reason, never in a token sent where it does not
// belong, a token of someone else redeemed or revoked, or Ready=True over an expired token.

// tamper edits one of the resource's Secrets as a tenant would (no seal).
func (e *env) tamper(name string, edit func(*corev1.Secret)) {
	e.t.Helper()
	s := e.secret(name)
	if s == nil {
		e.t.Fatalf("Secret %s does not exist", name)
	}
	edit(s)
	if err := e.c.Update(e.ctx, s); err != nil {
		e.t.Fatal(err)
	}
}

// foreignAccessToken is an access token of another namespace's client (same Keycloak, same realm).
func (e *env) foreignAccessToken() string {
	e.t.Helper()
	e.kc.SetClientSecret("team-b-client", "team-b-secret")
	tok, err := e.kc.Token(e.ctx, keycloak.Endpoint{URL: "https://keycloak.example.com", Realm: "mlflow"},
		keycloak.ClientAuth{ClientID: "team-b-client", Secret: "team-b-secret"}, keycloak.Grant{Type: keycloak.GrantClientCredentials})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok.AccessToken
}

// noRequestTo fails when any call so far went to a base URL other than allowed.
func (e *env) noRequestTo(allowed string) {
	e.t.Helper()
	for _, s := range e.kc.Requests() {
		if s.URL != allowed {
			e.t.Fatalf("a %s request went to %q", s.Kind, s.URL)
		}
	}
}

// putToken writes token into the consumer Secret as a careful tenant would: both keys and the
// hash annotation agree, so that only the seal tells it apart.
func putToken(s *corev1.Secret, token string) {
	s.Data[tokensecret.KeyToken] = []byte(token)
	s.Data[tokensecret.KeyTrackingToken] = []byte(token)
	s.Annotations[tokensecret.AnnotationTokenHash] = tokensecret.Hash(token)
}

var trustScenarios = []scenario{
	{"trust: a Secret another writer keeps overwriting is contested: at most three tokens a minute, not a loop", func(t *testing.T) {
		// A second installation of the operator (another seal key) rewrites the Secret after each
		// of this one's writes, as fast as it can.
		e := newEnv(t, nil)
		e.reconcile()
		other := e.foreignAccessToken()
		e.clk.Step(5 * time.Second)
		contested := false
		for range 400 {
			// Each rewrite is a watch event: the operator reconciles at once.
			e.tamper(testName, func(s *corev1.Secret) { putToken(s, other) })
			e.reconcile()
			if e.cond(authv1alpha1.ConditionReady) == "False/"+authv1alpha1.ReasonSecretContested {
				contested = true
			}
			e.clk.Step(time.Second)
			if e.clk.Since(e.start) > 5*time.Minute {
				break
			}
		}
		elapsed := e.clk.Since(e.start)
		issued := e.kc.Calls("client_credentials")
		t.Logf("%d tokens issued in %s of contest", issued, elapsed.Round(time.Second))
		if !contested {
			t.Fatal("Ready never read False/SecretContested")
		}
		if limit := 1 + maxOverwrites*(int(elapsed/time.Minute)+1); issued > limit {
			t.Fatalf("%d tokens issued in %s against another writer, want at most %d (%d a minute)", issued, elapsed, limit, maxOverwrites)
		}
		e.wantEvent("Warning", authv1alpha1.ReasonSecretModified, "new token")
		if got := e.obj().Status.LastFailureKind; got != authv1alpha1.FailureNeedsChange {
			t.Fatalf("lastFailureKind %q, want NeedsChange (a person must remove the other writer)", got)
		}
	}},
	{"trust: an edited expiry is re-issued at once and said so, never trusted", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		e.events()
		e.clk.Step(10 * time.Second)
		e.tamper(testName, func(s *corev1.Secret) {
			s.Data[tokensecret.KeyExpiresAt] = []byte(e.clk.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339))
		})
		e.reconcile()
		e.wantCalls("client_credentials", 2)
		e.wantEvent("Warning", authv1alpha1.ReasonSecretModified, "new token")
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		if exp := e.obj().Status.ExpiresAt.Time; exp.After(e.clk.Now().Add(300 * time.Second)) {
			t.Fatalf("status says the token expires at %s, after its real lifetime", exp)
		}
		if !tokensecret.Verify(e.secret(testName), testKeys) {
			t.Fatal("the rewritten Secret is not sealed")
		}
	}},
	{"trust: an edited expiry while Keycloak is down reads Ready=False, the Secret kept", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		e.kc.Fail = keycloaktest.Unreachable
		e.tamper(testName, func(s *corev1.Secret) {
			s.Data[tokensecret.KeyExpiresAt] = []byte(e.clk.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339))
		})
		before := e.secret(testName).Data
		for range 5 {
			e.reconcile()
			if c := e.cond(authv1alpha1.ConditionReady); strings.HasPrefix(c, "True") {
				t.Fatalf("Ready = %s over a Secret a tenant edited", c)
			}
			e.clk.Step(e.last.RequeueAfter)
		}
		if string(e.secret(testName).Data[tokensecret.KeyToken]) != string(before[tokensecret.KeyToken]) {
			t.Fatal("the Secret was blanked or changed without a new token")
		}
	}},
	{"trust: another namespace's access token placed in the Secret is never revoked", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		foreign := e.foreignAccessToken()
		e.tamper(testName, func(s *corev1.Secret) { putToken(s, foreign) })
		e.deleteNow()
		e.reconcile()
		if !e.gone() {
			t.Fatal("deletion did not finish")
		}
		if n := e.kc.Carried(foreign); n != 0 || e.kc.Revoked(foreign) {
			t.Fatalf("the other namespace's token was sent %d times (revoked: %v)", n, e.kc.Revoked(foreign))
		}
	}},
	{"trust: another session's refresh token placed in the state Secret is never redeemed", func(t *testing.T) {
		e, _ := refreshEnv(t)
		e.reconcile()
		foreign := e.kc.Bootstrap(testClient, "bob", true)
		e.tamper(testName+"-refresh-state", func(s *corev1.Secret) { s.Data[tokensecret.KeyRefreshToken] = []byte(foreign) })
		e.next()
		if n := e.kc.Carried(foreign); n != 0 {
			t.Fatalf("the foreign refresh token was sent to Keycloak %d times", n)
		}
		if !e.kc.RefreshActive(foreign) {
			t.Fatal("the other session's chain was broken")
		}
		e.wantEvent("Warning", authv1alpha1.ReasonSecretModified, "refresh token and revocation kit are ignored")
		if c, _ := jwtclaims.Parse(foreign); e.obj().Status.SessionID == c.SessionID {
			t.Fatal("the resource took over the other session")
		}
	}},
	{"trust: a bootstrap token of a session another resource holds is refused, never sent", func(t *testing.T) {
		e := newEnv(t, refreshGrant)
		stolen := e.kc.Bootstrap(testClient, "bob", true)
		owner := &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "bob", UID: "uid-bob"},
			Spec: baseResource().Spec}
		if err := e.c.Create(e.ctx, owner); err != nil {
			t.Fatal(err)
		}
		owner.Status.SessionID = "session-1" // the session of bob's chain, as bob's resource records it
		if err := e.c.Status().Update(e.ctx, owner); err != nil {
			t.Fatal(err)
		}
		if err := e.c.Create(e.ctx, userSecret(bootstrapSecret, map[string]string{"refresh-token": stolen})); err != nil {
			t.Fatal(err)
		}
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionRenewalFailing, "True/"+authv1alpha1.ReasonForeignRefreshToken)
		e.wantCond(authv1alpha1.ConditionStalled, "True/"+authv1alpha1.ReasonForeignRefreshToken)
		if n := e.kc.Carried(stolen); n != 0 || !e.kc.RefreshActive(stolen) {
			t.Fatalf("the stolen token was sent %d times", n)
		}
	}},
	{"trust: a bootstrap token of another client is refused, never sent", func(t *testing.T) {
		e := newEnv(t, refreshGrant)
		other := e.kc.Bootstrap("team-b-client", "bob", true)
		if err := e.c.Create(e.ctx, userSecret(bootstrapSecret, map[string]string{"refresh-token": other})); err != nil {
			t.Fatal(err)
		}
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionRenewalFailing, "True/"+authv1alpha1.ReasonForeignRefreshToken)
		if e.kc.Carried(other) != 0 {
			t.Fatal("sent")
		}
	}},
	{"trust: a redirected revocation kit is never called, and nothing is reported revoked", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		e.tamper(testName+"-refresh-state", func(s *corev1.Secret) {
			s.Annotations["auth.mlflow-token-operator.io/keycloak-url"] = "https://attacker.example.net"
		})
		// The live credentials are gone too (a namespace deletion takes them first): only the kit
		// could revoke now.
		if err := e.c.Delete(e.ctx, userSecret(clientSecret, nil)); err != nil {
			t.Fatal(err)
		}
		e.deleteNow()
		for i := 0; !e.gone() && i < 40; i++ {
			e.reconcile()
			e.clk.Step(max(e.last.RequeueAfter, time.Second))
		}
		e.noRequestTo("https://keycloak.example.com")
		for _, ev := range e.events() {
			if strings.Contains(ev, "Normal Revoked") {
				t.Fatalf("reported %q", ev)
			}
		}
	}},
	{"trust: a sealed kit whose host the platform no longer allows is not used", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		if err := e.c.Delete(e.ctx, userSecret(clientSecret, nil)); err != nil {
			t.Fatal(err)
		}
		e.r.Guardrails.AllowedHosts = []string{"keycloak.internal.example.com"}
		calls := e.kc.TotalCalls()
		e.deleteNow()
		for i := 0; !e.gone() && i < 60; i++ {
			e.reconcile()
			e.clk.Step(max(e.last.RequeueAfter, time.Second))
		}
		if n := e.kc.TotalCalls() - calls; n != 0 {
			t.Fatalf("%d requests to a host outside --allowed-keycloak-hosts", n)
		}
		e.wantEvent("Warning", authv1alpha1.ReasonRevocationAbandoned)
	}},
	{"trust: a state Secret forged for a resource that never existed gets no request and keeps its finalizer", func(t *testing.T) {
		e := newEnv(t, nil)
		forged := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "ghost-refresh-state",
			Labels:      map[string]string{tokensecret.LabelManagedBy: tokensecret.ManagedByValue, tokensecret.LabelRole: tokensecret.RoleRefreshState},
			Annotations: map[string]string{"auth.mlflow-token-operator.io/keycloak-url": "https://attacker.example.net", "auth.mlflow-token-operator.io/keycloak-realm": "r", "auth.mlflow-token-operator.io/keycloak-client-id": "c"},
			Finalizers:  []string{authv1alpha1.Finalizer},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: authv1alpha1.GroupVersion.String(), Kind: "MLflowAccessToken", Name: "ghost", UID: "uid-ghost",
				Controller: new(true)}}},
			Data: map[string][]byte{"client-secret": []byte("x"), tokensecret.KeyRefreshToken: []byte("a.b.c")}}
		if err := e.c.Create(e.ctx, forged); err != nil {
			t.Fatal(err)
		}
		if (sealedOrOwned{e.r}).Create(event.CreateEvent{Object: forged}) {
			t.Fatal("the forged Secret's event would start a reconcile")
		}
		if _, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: testNS, Name: "ghost"}}); err != nil {
			t.Fatal(err)
		}
		if n := e.kc.TotalCalls(); n != 0 {
			t.Fatalf("%d requests for a forged Secret", n)
		}
		if !slices.Contains(e.secret("ghost-refresh-state").Finalizers, authv1alpha1.Finalizer) {
			t.Fatal("the operator removed the finalizer of a Secret it never wrote")
		}
	}},
	{"trust: a Secret sealed for one resource does not count for another", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		s := e.secret(testName)
		copied := s.DeepCopy()
		copied.ObjectMeta = metav1.ObjectMeta{Namespace: testNS, Name: "copy", Labels: s.Labels, Annotations: s.Annotations, OwnerReferences: s.OwnerReferences}
		if tokensecret.Verify(copied, testKeys) {
			t.Fatal("a copy under another name verifies")
		}
		other := s.DeepCopy()
		other.OwnerReferences[0].UID = "uid-other"
		if tokensecret.Verify(other, testKeys) {
			t.Fatal("a copy for another resource verifies")
		}
	}},
	{"trust: a restored older copy of the Secret is re-issued and said so", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		old := e.secret(testName).DeepCopy()
		e.next()
		e.events()
		e.clk.Step(5 * time.Second)
		e.tamper(testName, func(s *corev1.Secret) { s.Data, s.Annotations = old.Data, old.Annotations })
		e.reconcile()
		e.wantCalls("client_credentials", 3)
		e.wantEvent("Warning", authv1alpha1.ReasonSecretRestored, "older copy was restored")
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"trust: Secrets written before seals are believed when status agrees, and sealed without a grant", func(t *testing.T) {
		e, _ := refreshEnv(t)
		e.reconcile()
		for _, n := range []string{testName, testName + "-refresh-state"} {
			e.tamper(n, func(s *corev1.Secret) { delete(s.Annotations, tokensecret.AnnotationSeal) })
		}
		e.clk.Step(10 * time.Second)
		e.reconcile()
		e.wantCalls("refresh_token", 1)
		if !tokensecret.Verify(e.secret(testName), testKeys) {
			t.Fatal("the consumer Secret was not sealed")
		}
		e.next() // the renewal redeems the unsealed chain: status records its session
		e.wantCalls("refresh_token", 2)
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		if !tokensecret.Verify(e.secret(testName+"-refresh-state"), testKeys) {
			t.Fatal("the state Secret was not sealed")
		}
		for _, ev := range e.events() {
			if strings.Contains(ev, authv1alpha1.ReasonSecretModified) {
				t.Fatalf("event %q for a Secret of an older version", ev)
			}
		}
	}},
	{"trust: an unsealed Secret that status does not vouch for is not believed", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		e.tamper(testName, func(s *corev1.Secret) {
			delete(s.Annotations, tokensecret.AnnotationSeal)
			s.Data[tokensecret.KeyExpiresAt] = []byte(e.clk.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339))
		})
		e.reconcile()
		e.wantCalls("client_credentials", 2)
		e.wantEvent("Warning", authv1alpha1.ReasonSecretModified)
	}},
	{"trust: the final revocation failure has its own reason, apart from the retries", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		e.kc.Fail = keycloaktest.Unreachable
		e.deleteNow()
		for i := 0; !e.gone() && i < 60; i++ {
			e.reconcile()
			e.clk.Step(max(e.last.RequeueAfter, time.Second))
		}
		var retries, final int
		for _, ev := range e.events() {
			switch {
			case strings.HasPrefix(ev, "Warning "+authv1alpha1.ReasonRevocationFailedEvent+" "):
				retries++
			case strings.HasPrefix(ev, "Warning "+authv1alpha1.ReasonRevocationAbandoned+" ") && strings.Contains(ev, "stays valid until it expires"):
				final++
			}
		}
		if retries == 0 || final != 1 {
			t.Fatalf("%d retry events and %d final events, want some and exactly one", retries, final)
		}
	}},
}

func revokeSuperseded(grace *time.Duration) func(*authv1alpha1.MLflowAccessToken) {
	return func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Revocation = &authv1alpha1.RevocationSpec{RevokeSuperseded: true}
		if grace != nil {
			o.Spec.Revocation.SupersededGracePeriod = &metav1.Duration{Duration: *grace}
		}
	}
}

func (e *env) pendingSuperseded() *tokensecret.Superseded {
	e.t.Helper()
	return tokensecret.ReadSuperseded(e.secret(testName + "-refresh-state"))
}

var supersededScenarios = []scenario{
	{"revokeSuperseded: the replaced token is revoked after the grace period, not before", func(t *testing.T) {
		grace := 10 * time.Second
		e := newEnv(t, revokeSuperseded(&grace))
		e.reconcile()
		first := e.token()
		e.next()
		second := e.token()
		if e.kc.Revoked(first) {
			t.Fatal("revoked before the grace period")
		}
		if p := e.pendingSuperseded(); p == nil || !p.RevokeAt.Equal(e.clk.Now().Add(grace).Truncate(time.Second)) {
			t.Fatalf("pending %+v", p)
		}
		if e.last.RequeueAfter > grace {
			t.Fatalf("requeued after %s, after the grace period", e.last.RequeueAfter)
		}
		e.next()
		if !e.kc.Revoked(first) || e.kc.Revoked(second) {
			t.Fatalf("revoked: first %v, second %v", e.kc.Revoked(first), e.kc.Revoked(second))
		}
		if e.pendingSuperseded() != nil {
			t.Fatal("the revoked token is still recorded")
		}
		e.wantCalls("client_credentials", 2)
	}},
	{"revokeSuperseded: the default grace period is the consumers' delivery time", func(t *testing.T) {
		e := newEnv(t, revokeSuperseded(nil))
		e.reconcile()
		e.next()
		p := e.pendingSuperseded()
		if p == nil {
			t.Fatal("nothing pending")
		}
		// No nudged pods: the kubelet's periodic sync, 1.5 × 1 min.
		if got := p.RevokeAt.Sub(e.clk.Now()); got < 89*time.Second || got > 90*time.Second {
			t.Fatalf("due %s after the rotation, want 90 s", got)
		}
	}},
	{"revokeSuperseded: Keycloak down at the due time: retried, and forgotten once it expired", func(t *testing.T) {
		grace := 10 * time.Second
		e := newEnv(t, revokeSuperseded(&grace))
		e.reconcile()
		first := e.token()
		e.next()
		e.kc.Fail = keycloaktest.Unreachable
		e.next()
		e.wantEvent("Warning", authv1alpha1.ReasonSupersededRevocationFailed)
		if e.last.RequeueAfter > supersededRetry {
			t.Fatalf("retry after %s", e.last.RequeueAfter)
		}
		e.next()
		if n := e.kc.Carried(first); n != 2 {
			t.Fatalf("%d attempts to revoke, want 2 (one retry)", n)
		}
		// Past the first token's expiry (300 s after the start), before the second one's renewal.
		e.clk.SetTime(e.start.Add(301 * time.Second))
		e.kc.Fail = nil
		e.reconcile()
		if e.pendingSuperseded() != nil || e.kc.Carried(first) != 2 {
			t.Fatalf("an expired superseded token is still pending or was sent again (%d)", e.kc.Carried(first))
		}
	}},
	{"revokeSuperseded: deletion revokes a pending superseded token too", func(t *testing.T) {
		grace := time.Minute
		e := newEnv(t, revokeSuperseded(&grace))
		e.reconcile()
		first := e.token()
		e.next()
		e.deleteNow()
		e.reconcile()
		if !e.gone() || !e.kc.Revoked(first) {
			t.Fatalf("gone %v, first revoked %v", e.gone(), e.kc.Revoked(first))
		}
	}},
	{"revokeSuperseded off: nothing recorded, nothing revoked", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		first := e.token()
		e.next()
		e.clk.Step(2 * time.Minute)
		e.reconcile()
		if e.kc.Revoked(first) || e.pendingSuperseded() != nil {
			t.Fatal("a superseded token was handled with the option off")
		}
	}},
}

// seriesOf lists the operator's per-resource metric series that name the scenario's resource.
func seriesOf(t *testing.T) []string {
	t.Helper()
	fams, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "mlflow_token_") {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["namespace"] == testNS && labels["name"] == testName {
				out = append(out, f.GetName())
			}
		}
	}
	return out
}

var lifecycleScenarios = []scenario{
	{"lifecycle: a resource gone without its finalizer leaves no metric series behind", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		if len(seriesOf(t)) == 0 {
			t.Fatal("no series while the resource lives: the check below would prove nothing")
		}
		// Someone removes the finalizer by hand, and the resource goes without revocation.
		o := e.obj()
		o.Finalizers = nil
		if err := e.c.Update(e.ctx, o); err != nil {
			t.Fatal(err)
		}
		if err := e.c.Delete(e.ctx, o); err != nil {
			t.Fatal(err)
		}
		e.reconcile()
		if s := seriesOf(t); len(s) != 0 {
			t.Fatalf("series left for a resource that no longer exists: %v (MLflowTokenRenewalOverdue would fire for it)", s)
		}
	}},
}
