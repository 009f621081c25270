package controllers

import (
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak/keycloaktest"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// TestScenarios drives Reconcile through what happens to a resource in its life. Each scenario
// states the facts it starts from, what it does, and checks the Secret, the status, the events
// and the calls to Keycloak.
func TestScenarios(t *testing.T) {
	for _, sc := range slices.Concat(scenarios, chainScenarios, deleteScenarios, issuerScenarios, issuerControllerScenarios, trustScenarios, supersededScenarios, lifecycleScenarios, []scenario{renameScenario}) {
		t.Run(sc.name, func(t *testing.T) { sc.run(t) })
	}
}

type scenario struct {
	name string
	run  func(t *testing.T)
}

var scenarios = []scenario{
	{"first issue", func(t *testing.T) {
		e := newEnv(t, nil)
		res := e.reconcile()
		e.wantCalls("client_credentials", 1)
		if e.token() == "" {
			t.Fatal("no token in the Secret")
		}
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		e.wantCond(authv1alpha1.ConditionReconciling, "")
		e.wantCond(authv1alpha1.ConditionStalled, "")
		e.wantEvent("Issued", "service-account-mlflow-operator")
		o := e.obj()
		if !controllerutilContains(o) || o.Status.Rotations != 1 || o.Status.ObservedGeneration != 1 {
			t.Fatalf("status %+v", o.Status)
		}
		// 300 s token: renewal between 170 s and 200 s after issue; the requeue brings it back then.
		if d := res.RequeueAfter; d < 170*time.Second || d > 200*time.Second || !o.Status.RenewalTime.Time.Equal(e.start.Add(d)) {
			t.Fatalf("requeue after %s, renewal time %s", d, o.Status.RenewalTime)
		}
	}},
	{"not due: nothing is asked of Keycloak", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		rv := e.secret(testName).ResourceVersion
		for range 5 {
			e.clk.Step(10 * time.Second)
			e.reconcile()
		}
		e.wantCalls("client_credentials", 1)
		if e.secret(testName).ResourceVersion != rv {
			t.Fatal("the Secret was rewritten while nothing changed")
		}
	}},
	{"renewal due: one call, the Secret updated in place", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		first, uid := e.token(), e.secret(testName).UID
		e.next()
		e.wantCalls("client_credentials", 2)
		if e.token() == first || e.secret(testName).UID != uid {
			t.Fatal("not rotated in place")
		}
		e.wantEvent("Renewed", "on schedule")
		if e.obj().Status.Rotations != 2 {
			t.Fatalf("rotations %d", e.obj().Status.Rotations)
		}
	}},
	{"backoff holds across interleaved reconciles", func(t *testing.T) {
		// The bug this design removes: a reconcile during the backoff (an annotation change, an
		// edit of the Secret, a resync) rewrote the retry time to the past renewal time, and the
		// next reconcile called Keycloak at once.
		e := newEnv(t, nil)
		e.reconcile()
		e.kc.Fail = keycloaktest.Unreachable
		for range 3 { // three failed renewals: the backoff grows to 8 s
			e.next()
		}
		calls := e.kc.Calls("client_credentials")
		retryAt := e.obj().Status.RenewalTime.Time
		if d := retryAt.Sub(e.clk.Now()); d < 5*time.Second {
			t.Fatalf("third failure retries after %s", d)
		}
		e.wantCond(authv1alpha1.ConditionReady, "True/RenewalFailing")
		for e.clk.Now().Add(500 * time.Millisecond).Before(retryAt) {
			e.clk.Step(500 * time.Millisecond)
			e.update(false, func(o *authv1alpha1.MLflowAccessToken) {
				o.Annotations = map[string]string{"touched": e.clk.Now().String()}
			})
			e.reconcile()
			if got := e.obj().Status.RenewalTime.Time; !got.Equal(retryAt) {
				t.Fatalf("an interleaved reconcile moved the retry from %s to %s", retryAt, got)
			}
		}
		e.wantCalls("client_credentials", calls)
		e.kc.Fail = nil
		e.clk.SetTime(retryAt)
		e.reconcile()
		e.wantCalls("client_credentials", calls+1)
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		e.wantCond(authv1alpha1.ConditionRenewalFailing, "False/RenewalSucceeded")
	}},
	{"invalid template costs no grant and says so", func(t *testing.T) {
		e := newEnv(t, func(o *authv1alpha1.MLflowAccessToken) {
			o.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{Labels: map[string]authv1alpha1.LabelValue{"team": "a234567890123456789012345678901234567890123456789012345678901234567890"}}
		})
		e.reconcile()
		e.wantCalls("client_credentials", 0)
		e.wantCond(authv1alpha1.ConditionReady, "False/InvalidSecretTemplate")
		e.wantCond(authv1alpha1.ConditionStalled, "True/InvalidSecretTemplate")
		e.wantCond(authv1alpha1.ConditionReconciling, "")
		e.wantEvent("Warning", "InvalidSecretTemplate", "spec.secretTemplate.labels")
		for range 5 {
			e.next()
		}
		e.wantCalls("client_credentials", 0)
	}},
	{"a live token whose template turns invalid: no grant spent, never Ready past expiry", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		exp := e.obj().Status.ExpiresAt.Time
		e.update(true, func(o *authv1alpha1.MLflowAccessToken) {
			o.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{Labels: map[string]authv1alpha1.LabelValue{"bad key": "v"}}
		})
		// The metadata-only write of the new template is refused by the API server as it would be.
		e.secretUpdate = func(bool) error {
			return apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, testName, field.ErrorList{field.Invalid(field.NewPath("metadata", "labels"), "bad key", "name part must consist of alphanumeric characters")})
		}
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionReady, "True/RenewalFailing")
		e.wantCond(authv1alpha1.ConditionStalled, "True/SecretRejected")
		for e.clk.Now().Before(exp.Add(time.Minute)) {
			e.next()
		}
		e.wantCalls("client_credentials", 1)
		e.wantCond(authv1alpha1.ConditionReady, "False/InvalidSecretTemplate")
	}},
	{"a forbidden Secret write costs no grant", func(t *testing.T) {
		e := newEnv(t, nil)
		e.secretCreate = func(bool) error { return forbidden() }
		e.reconcile()
		e.wantCalls("client_credentials", 0)
		e.wantCond(authv1alpha1.ConditionReady, "False/SecretForbidden")
		e.wantCond(authv1alpha1.ConditionStalled, "True/SecretForbidden")
		e.wantEvent("Warning", "SecretForbidden", "cannot create resource")
		e.secretCreate = nil
		e.next()
		e.wantCalls("client_credentials", 1)
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"a write refused after the grant: one grant lost, then dry runs first", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		e.secretUpdate = func(dry bool) error {
			return apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, testName, field.ErrorList{field.Forbidden(field.NewPath("data"), "denied by policy require-owner")})
		}
		e.next() // due: the write is refused after the grant
		e.wantCalls("client_credentials", 2)
		e.wantCond(authv1alpha1.ConditionRenewalFailing, "True/SecretRejected")
		for range 4 {
			e.next()
		}
		e.wantCalls("client_credentials", 2)
		e.secretUpdate = nil
		e.next()
		e.wantCalls("client_credentials", 3)
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"renew request", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		old := e.token()
		e.clk.Step(5 * time.Second)
		e.update(false, func(o *authv1alpha1.MLflowAccessToken) {
			o.Annotations = map[string]string{authv1alpha1.AnnotationRenewRequest: "req-1"}
		})
		e.reconcile()
		if e.token() == old || e.obj().Status.LastRenewalRequest != "req-1" || e.kc.Revoked(old) {
			t.Fatalf("renew request not honoured as asked: %+v", e.obj().Status)
		}
		e.wantEvent("Renewed on request")
		e.reconcile()
		e.wantCalls("client_credentials", 2)
	}},
	{"revoke request revokes the leaked token, then replaces it", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		leaked := e.token()
		e.update(false, func(o *authv1alpha1.MLflowAccessToken) {
			o.Annotations = map[string]string{authv1alpha1.AnnotationRevokeRequest: "req-1"}
		})
		e.reconcile()
		if !e.kc.Revoked(leaked) || e.token() == leaked || e.obj().Status.LastRevocationRequest != "req-1" {
			t.Fatal("the leaked token was not revoked and replaced")
		}
		e.wantEvent("Revoked", "on request")
	}},
	{"revoke request while Keycloak fails: the request stays pending", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		leaked := e.token()
		e.kc.Fail = func(op keycloak.Op) error {
			if op.Endpoint == "token" {
				return keycloaktest.Unreachable(op)
			}
			return nil
		}
		e.update(false, func(o *authv1alpha1.MLflowAccessToken) {
			o.Annotations = map[string]string{authv1alpha1.AnnotationRevokeRequest: "req-1"}
		})
		e.reconcile()
		if !e.kc.Revoked(leaked) || e.obj().Status.LastRevocationRequest != "" {
			t.Fatal("revoked, but the request must stay pending until a new token is written")
		}
		e.kc.Fail = nil
		e.next()
		if e.token() == leaked || e.obj().Status.LastRevocationRequest != "req-1" {
			t.Fatal("the leaked token was not replaced once Keycloak answered")
		}
	}},
	{"renewBefore change applies at once", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		e.clk.Step(100 * time.Second)
		e.reconcile()
		e.wantCalls("client_credentials", 1)
		e.update(true, func(o *authv1alpha1.MLflowAccessToken) {
			o.Spec.RenewBefore = &metav1.Duration{Duration: 250 * time.Second}
		})
		e.reconcile()
		e.wantCalls("client_credentials", 2)
		// And the schedule of the new token follows it: 300 s − 250 s, minus up to 30 s jitter.
		if d := e.obj().Status.RenewalTime.Sub(e.clk.Now()); d > 50*time.Second || d < 29*time.Second {
			t.Fatalf("renewal in %s, want in [30 s, 50 s]", d)
		}
	}},
	{"client change: reissued at once, Reconciling while it fails", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		e.update(true, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.ClientID = "other-client" })
		e.reconcile() // other-client is unknown to Keycloak
		e.wantCond(authv1alpha1.ConditionStalled, "True/InvalidClientCredentials")
		e.wantCond(authv1alpha1.ConditionReady, "True/RenewalFailing")
		e.kc.SetClientSecret("other-client", testSecret)
		e.next()
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		e.wantCond(authv1alpha1.ConditionStalled, "")
		if c := e.obj().Status.Token; c == nil || c.AuthorizedParty != "other-client" {
			t.Fatalf("token claims %+v", c)
		}
	}},
	{"Secret deleted by hand is restored", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		if err := e.c.Delete(e.ctx, e.secret(testName)); err != nil {
			t.Fatal(err)
		}
		// The operator's finalizer holds it; outside a namespace deletion it lets it go...
		if s := e.secret(testName); s == nil || s.DeletionTimestamp == nil {
			t.Fatal("the Secret did not wait for the operator")
		}
		e.reconcile()
		if e.secret(testName) != nil {
			t.Fatal("the deleted Secret was not let go")
		}
		// ...and writes a new one.
		e.next()
		e.wantCalls("client_credentials", 2)
		if e.token() == "" {
			t.Fatal("not restored")
		}
	}},
	{"Secret edited by hand is replaced", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		s := e.secret(testName)
		s.Data[tokensecret.KeyToken] = []byte("pasted-by-hand")
		if err := e.c.Update(e.ctx, s); err != nil {
			t.Fatal(err)
		}
		e.reconcile()
		e.wantCalls("client_credentials", 2)
		if e.token() == "pasted-by-hand" {
			t.Fatal("the hand-edited token stayed")
		}
	}},
	{"a token expires while Keycloak is down: Ready turns False at its expiry", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		exp := e.obj().Status.ExpiresAt.Time
		e.kc.Fail = keycloaktest.Unreachable
		for e.clk.Now().Before(exp) {
			e.next()
			if e.clk.Now().Before(exp) {
				e.wantCond(authv1alpha1.ConditionReady, "True/RenewalFailing")
			}
		}
		if e.clk.Now().After(exp.Add(time.Second)) {
			t.Fatalf("looked again %s after the expiry", e.clk.Now().Sub(exp))
		}
		e.wantCond(authv1alpha1.ConditionReady, "False/KeycloakUnreachable")
		e.wantCond(authv1alpha1.ConditionReconciling, "True/KeycloakUnreachable")
		e.wantCond(authv1alpha1.ConditionStalled, "")
		if e.token() == "" {
			t.Fatal("a failure blanked the Secret")
		}
	}},
	{"missing client secret: Stalled, then recovers when it is created", func(t *testing.T) {
		e := newEnv(t, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.ClientSecretRef.Name = "not-yet" })
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionReady, "False/ClientSecretNotFound")
		e.wantCond(authv1alpha1.ConditionStalled, "True/ClientSecretNotFound")
		if err := e.c.Create(e.ctx, userSecret("not-yet", map[string]string{"client-secret": testSecret})); err != nil {
			t.Fatal(err)
		}
		e.next()
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		e.wantCond(authv1alpha1.ConditionStalled, "")
	}},
	{"API server unavailable: an error for the work queue, nothing recorded", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		e.uncachedGet = func(client.ObjectKey) error { return unavailable() }
		e.clk.Step(e.last.RequeueAfter)
		e.reconcileErr()
		e.wantCalls("client_credentials", 1)
		if e.obj().Status.FailedAttempts != 0 {
			t.Fatal("an API server outage was recorded as the user's failure")
		}
		e.uncachedGet = nil
		e.reconcile()
		e.wantCalls("client_credentials", 2)
	}},
	{"status write conflict: reconciled again, no second grant", func(t *testing.T) {
		e := newEnv(t, nil)
		e.statusPatch = func(bool) error {
			return apierrors.NewConflict(schema.GroupResource{Resource: "mlflowaccesstokens"}, testName, nil)
		}
		res := e.reconcile()
		if res.RequeueAfter != 200*time.Millisecond {
			t.Fatalf("requeue %+v after a lost status write", res)
		}
		e.statusPatch = nil
		e.reconcile()
		e.wantCalls("client_credentials", 1)
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"a cache that missed an update of the resource: after a refused status write, it is read from the API server", func(t *testing.T) {
		e := newEnv(t, nil)
		e.reconcile()
		stale := e.obj()
		e.next() // the first renewal: Secret and status move on, the cache does not
		e.wantCalls("client_credentials", 2)
		e.staleResource = stale
		if res := e.reconcile(); res.RequeueAfter != 200*time.Millisecond {
			t.Fatalf("the status write based on the stale resource was not refused: %+v", res)
		}
		reads := e.uncachedReads
		if res := e.reconcile(); res.RequeueAfter == 200*time.Millisecond {
			t.Fatalf("the status write was refused again: the resource was read from the stale cache (%+v)", res)
		}
		if e.uncachedReads == reads {
			t.Fatal("the resource was not read from the API server after a refused status write")
		}
		e.wantCalls("client_credentials", 2)
		e.staleResource = nil // the watch event of the status write brings the cache up to date
		s := e.secret(e.obj().SecretNameOrDefault())
		if got, want := e.obj().Status.ExpiresAt.Time, s.Data[tokensecret.KeyExpiresAt]; got.UTC().Format(time.RFC3339) != string(want) {
			t.Fatalf("status expiresAt %s, the Secret's %s", got, want)
		}
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"renewBefore longer than the lifetime: a Warning says what happens instead", func(t *testing.T) {
		e := newEnv(t, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.RenewBefore = &metav1.Duration{Duration: time.Hour} })
		e.reconcile()
		e.wantEvent("Warning", "RenewalWindowAdjusted", "renewing after a third of the lifetime")
	}},
}

func controllerutilContains(o *authv1alpha1.MLflowAccessToken) bool {
	for _, f := range o.Finalizers {
		if f == authv1alpha1.Finalizer {
			return true
		}
	}
	return false
}

var renameScenario = scenario{"secretName change: the token moves, the old Secret goes", func(t *testing.T) {
	e := newEnv(t, nil)
	e.reconcile()
	e.update(true, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.SecretName = "renamed" })
	e.reconcile()
	if s := e.secret("renamed"); s == nil || len(s.Data["token"]) == 0 {
		t.Fatal("no token in the renamed Secret")
	}
	if e.secret(testName) != nil {
		t.Fatal("the old Secret is still there (held by the operator's finalizer?)")
	}
}}
