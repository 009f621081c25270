package controllers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/mlflowcheck"
)

// The MLflow acceptance check, driven through Reconcile with a fake checker: what is checked
// when, what the condition, the events, kstatus and the metric say about each answer.

const testMLflow = "https://mlflow.example.com"

// fakeChecker records submissions and answers them when a scenario says so. Like the real one,
// it keeps the last result and the pending check per resource.
type fakeChecker struct {
	e         *env
	submitted []mlflowcheck.Request
	pending   map[types.NamespacedName]mlflowcheck.Request
	results   map[types.NamespacedName]mlflowcheck.Result
	forgotten []types.NamespacedName
}

func (f *fakeChecker) Submit(req mlflowcheck.Request) {
	// The check comes after the Secret write: the token submitted is already in the Secret.
	if got := f.e.token(); got != req.Token {
		f.e.t.Fatal("a check was submitted for a token that is not (yet) in the Secret")
	}
	f.submitted = append(f.submitted, req)
	f.pending[req.Key] = req
}

func (f *fakeChecker) Lookup(k types.NamespacedName) (*mlflowcheck.Result, string) {
	var last *mlflowcheck.Result
	if r, ok := f.results[k]; ok {
		last = &r
	}
	return last, f.pending[k].TokenID
}

func (f *fakeChecker) Forget(k types.NamespacedName) {
	f.forgotten = append(f.forgotten, k)
	delete(f.results, k)
	delete(f.pending, k)
}

// answer completes the pending check with an outcome; the controller is notified, which the
// scenario plays by reconciling.
func (f *fakeChecker) answer(outcome mlflowcheck.Outcome, msg string) {
	f.e.t.Helper()
	req, ok := f.pending[key]
	if !ok {
		f.e.t.Fatal("no check pending")
	}
	delete(f.pending, key)
	f.results[key] = mlflowcheck.Result{TokenID: req.TokenID, TrackingURI: req.TrackingURI, Outcome: outcome, Message: msg, CheckedAt: f.e.clk.Now()}
	f.e.reconcile()
}

func (f *fakeChecker) wantSubmitted(n int) {
	f.e.t.Helper()
	if len(f.submitted) != n {
		f.e.t.Fatalf("%d checks submitted, want %d", len(f.submitted), n)
	}
}

// mlflowEnv is a scenario world whose resource has a tracking URI and whose reconciler has a
// fake checker.
func mlflowEnv(t *testing.T, mutate func(*authv1alpha1.MLflowAccessToken)) (*env, *fakeChecker) {
	e := newEnv(t, func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.MLflow = &authv1alpha1.MLflowSpec{TrackingURI: testMLflow}
		if mutate != nil {
			mutate(o)
		}
	})
	f := &fakeChecker{e: e, pending: map[types.NamespacedName]mlflowcheck.Request{}, results: map[types.NamespacedName]mlflowcheck.Result{}}
	e.r.MLflow = f
	return e, f
}

// current checks what kstatus (kubectl wait, Flux, Argo CD's generic health) reads as Current: the
// spec observed, no Reconciling and no Stalled condition True. (kstatus itself runs against real
// objects in the test module's suites; its rules are these.)
func (e *env) current() error {
	e.t.Helper()
	o := e.obj()
	switch {
	case o.Status.ObservedGeneration != o.Generation:
		return fmt.Errorf("observedGeneration %d, generation %d", o.Status.ObservedGeneration, o.Generation)
	case meta.IsStatusConditionTrue(o.Status.Conditions, authv1alpha1.ConditionReconciling):
		return errors.New("Reconciling=True")
	case meta.IsStatusConditionTrue(o.Status.Conditions, authv1alpha1.ConditionStalled):
		return errors.New("Stalled=True")
	}
	return nil
}

// acceptedMetric is the mlflow_token_mlflow_accepted series of the test resource (nil: none).
func acceptedMetric(t *testing.T) *float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != metrics.NameMLflowAccepted {
			continue
		}
		for _, m := range mf.GetMetric() {
			if mlflowLabels(m)["namespace"] == testNS && mlflowLabels(m)["name"] == testName {
				v := m.GetGauge().GetValue()
				return &v
			}
		}
	}
	return nil
}

func mlflowLabels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func wantMetric(t *testing.T, want *float64) {
	t.Helper()
	got := acceptedMetric(t)
	switch {
	case want == nil && got != nil:
		t.Fatalf("%s = %v, want no series", metrics.NameMLflowAccepted, *got)
	case want != nil && (got == nil || *got != *want):
		t.Fatalf("%s = %v, want %v", metrics.NameMLflowAccepted, got, *want)
	}
}

func ptr(v float64) *float64 { return &v }

func (e *env) condMessage(typ string) string {
	e.t.Helper()
	if c := meta.FindStatusCondition(e.obj().Status.Conditions, typ); c != nil {
		return c.Message
	}
	return ""
}

const rejection = "MLflow at https://mlflow.example.com answered 401: it does not accept the token. Likely cause, from the token's claims: the token has no aud claim"

func TestMLflowScenarios(t *testing.T) {
	for _, sc := range mlflowScenarios {
		t.Run(sc.name, func(t *testing.T) { sc.run(t) })
	}
}

var mlflowScenarios = []scenario{
	{"a plain-HTTP tracking URI the platform does not allow is not asked", func(t *testing.T) {
		e, f := mlflowEnv(t, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.MLflow.TrackingURI = "http://mlflow.team-a.svc:5000" })
		e.reconcile()
		f.wantSubmitted(0)
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "Unknown/"+authv1alpha1.ReasonMLflowCheckNotAllowed)
		e.r.Guardrails.AllowInsecureHTTP = true
		e.update(false, func(o *authv1alpha1.MLflowAccessToken) {
			o.Annotations = map[string]string{authv1alpha1.AnnotationRenewRequest: "1"}
		})
		e.reconcile()
		f.wantSubmitted(1)
	}},
	{"a tracking URI outside --allowed-mlflow-hosts is not asked", func(t *testing.T) {
		e, f := mlflowEnv(t, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.MLflow.TrackingURI = "https://attacker.example.net" })
		e.r.Guardrails.AllowedMLflowHosts = []string{".example.com"}
		e.reconcile()
		f.wantSubmitted(0)
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "Unknown/"+authv1alpha1.ReasonMLflowCheckNotAllowed)
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"no tracking URI: nothing checked, no condition", func(t *testing.T) {
		e, f := mlflowEnv(t, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.MLflow = nil })
		e.reconcile()
		f.wantSubmitted(0)
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "")
		wantMetric(t, nil)
	}},
	{"no checker (disabled): no condition", func(t *testing.T) {
		e, _ := mlflowEnv(t, nil)
		e.r.MLflow = nil
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "")
	}},
	{"accepted: pending, then True; routine rotations are not checked again", func(t *testing.T) {
		e, f := mlflowEnv(t, nil)
		e.reconcile()
		f.wantSubmitted(1)
		req := f.submitted[0]
		c, _ := jwtclaims.Parse(e.token())
		if req.Key != key || req.TrackingURI != testMLflow || req.TokenID != "jti:"+c.ID || req.CABundle != nil {
			t.Fatalf("request %+v", req)
		}
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "Unknown/Pending")
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		wantMetric(t, nil)
		f.answer(mlflowcheck.Accepted, `MLflow at https://mlflow.example.com accepts the token as user "service-account-mlflow-operator"`)
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "True/Accepted")
		wantMetric(t, ptr(1))
		for range 3 {
			e.next()
		}
		if e.obj().Status.Rotations != 4 {
			t.Fatalf("%d rotations", e.obj().Status.Rotations)
		}
		f.wantSubmitted(1)
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "True/Accepted")
		if !strings.Contains(e.condMessage(authv1alpha1.ConditionMLflowAccepted), "service-account-mlflow-operator") {
			t.Fatalf("message %q", e.condMessage(authv1alpha1.ConditionMLflowAccepted))
		}
	}},
	{"rejected: False with the explanation, Ready stays True, kstatus Current, one Warning", func(t *testing.T) {
		e, f := mlflowEnv(t, nil)
		e.reconcile()
		e.events()
		f.answer(mlflowcheck.Rejected, rejection)
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "False/Rejected")
		if e.condMessage(authv1alpha1.ConditionMLflowAccepted) != rejection {
			t.Fatalf("message %q", e.condMessage(authv1alpha1.ConditionMLflowAccepted))
		}
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		e.wantCond(authv1alpha1.ConditionReconciling, "")
		e.wantCond(authv1alpha1.ConditionStalled, "")
		if err := e.current(); err != nil {
			t.Fatalf("not Current for kstatus (%v): a rejection by MLflow is no progress and no failure of the resource", err)
		}
		wantMetric(t, ptr(0))
		e.wantEvent("Warning", authv1alpha1.ReasonMLflowRejectedEvent, "no aud claim")
		// Every rotation is checked while MLflow rejects; the same rejection keeps the condition
		// as it is (no flapping through Unknown) and records no new event.
		transition := meta.FindStatusCondition(e.obj().Status.Conditions, authv1alpha1.ConditionMLflowAccepted).LastTransitionTime
		for i := range 2 {
			e.next()
			f.wantSubmitted(2 + i)
			e.wantCond(authv1alpha1.ConditionMLflowAccepted, "False/Rejected")
			f.answer(mlflowcheck.Rejected, rejection)
			e.wantCond(authv1alpha1.ConditionMLflowAccepted, "False/Rejected")
		}
		if evs := e.events(); len(evs) != 2 || !strings.Contains(evs[0], "Renewed") || !strings.Contains(evs[1], "Renewed") {
			t.Fatalf("events %q, want only the two renewals", evs)
		}
		if got := meta.FindStatusCondition(e.obj().Status.Conditions, authv1alpha1.ConditionMLflowAccepted).LastTransitionTime; !got.Equal(&transition) {
			t.Fatal("the condition transitioned while MLflow kept rejecting")
		}
		// Another rejection is another event.
		e.next()
		f.answer(mlflowcheck.Rejected, "MLflow at https://mlflow.example.com answered 403 Forbidden")
		e.wantEvent("Warning", authv1alpha1.ReasonMLflowRejectedEvent, "403")
	}},
	{"a fix on MLflow's side is seen at the next rotation", func(t *testing.T) {
		e, f := mlflowEnv(t, nil)
		e.reconcile()
		f.answer(mlflowcheck.Rejected, rejection)
		e.next()
		f.wantSubmitted(2)
		e.events()
		f.answer(mlflowcheck.Accepted, "MLflow at https://mlflow.example.com accepts the token")
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "True/Accepted")
		e.wantEvent("Normal", authv1alpha1.ConditionMLflowAccepted, "accepts the token")
		wantMetric(t, ptr(1))
		e.next()
		f.wantSubmitted(2)
	}},
	{"no answer: Unknown, checked again at the next rotation", func(t *testing.T) {
		e, f := mlflowEnv(t, nil)
		e.reconcile()
		f.answer(mlflowcheck.Unreachable, "MLflow at https://mlflow.example.com did not answer in time")
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "Unknown/MLflowUnreachable")
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		if err := e.current(); err != nil {
			t.Fatalf("not Current for kstatus: %v", err)
		}
		wantMetric(t, nil)
		e.next()
		f.wantSubmitted(2)
		f.answer(mlflowcheck.Unexpected, "MLflow at https://mlflow.example.com answered 302 redirecting")
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "Unknown/UnexpectedAnswer")
	}},
	{"a renewal on request is checked even after acceptance", func(t *testing.T) {
		e, f := mlflowEnv(t, nil)
		e.reconcile()
		f.answer(mlflowcheck.Accepted, "accepted")
		e.update(false, func(o *authv1alpha1.MLflowAccessToken) {
			o.Annotations = map[string]string{authv1alpha1.AnnotationRenewRequest: "req-1"}
		})
		e.reconcile()
		f.wantSubmitted(2)
		// The last answer stands while the new token is checked.
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "True/Accepted")
	}},
	{"an answer for an older token does not speak for the new one", func(t *testing.T) {
		e, f := mlflowEnv(t, nil)
		e.reconcile()
		old := f.pending[key]
		e.update(false, func(o *authv1alpha1.MLflowAccessToken) {
			o.Annotations = map[string]string{authv1alpha1.AnnotationRenewRequest: "req-1"}
		})
		e.reconcile()
		f.wantSubmitted(2)
		// The older token's check finishes after the newer one was submitted.
		f.results[key] = mlflowcheck.Result{TokenID: old.TokenID, TrackingURI: testMLflow, Outcome: mlflowcheck.Rejected, Message: rejection}
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "Unknown/Pending")
		f.answer(mlflowcheck.Accepted, "accepted")
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "True/Accepted")
	}},
	{"a restart keeps the condition and checks nothing new", func(t *testing.T) {
		e, f := mlflowEnv(t, nil)
		e.reconcile()
		f.answer(mlflowcheck.Accepted, "accepted")
		fresh := &fakeChecker{e: e, pending: map[types.NamespacedName]mlflowcheck.Request{}, results: map[types.NamespacedName]mlflowcheck.Result{}}
		e.r.MLflow = fresh
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "True/Accepted")
		e.next()
		fresh.wantSubmitted(0)
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "True/Accepted")
	}},
	{"tracking URI changed: not checked until the next token; removed: no condition, no series", func(t *testing.T) {
		e, f := mlflowEnv(t, nil)
		e.reconcile()
		f.answer(mlflowcheck.Accepted, "accepted")
		e.update(true, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.MLflow.TrackingURI = "https://mlflow-2.example.com" })
		e.reconcile()
		f.wantSubmitted(1)
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "Unknown/NotChecked")
		wantMetric(t, nil)
		e.next()
		f.wantSubmitted(2)
		if f.submitted[1].TrackingURI != "https://mlflow-2.example.com" {
			t.Fatalf("checked %s", f.submitted[1].TrackingURI)
		}
		f.answer(mlflowcheck.Accepted, "accepted")
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "True/Accepted")
		e.update(true, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.MLflow = nil })
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionMLflowAccepted, "")
		wantMetric(t, nil)
	}},
	{"Keycloak's CA bundle is trusted for MLflow too", func(t *testing.T) {
		ca := selfSignedCA(t)
		e, f := mlflowEnv(t, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.CABundle = ca })
		e.reconcile()
		f.wantSubmitted(1)
		if string(f.submitted[0].CABundle) != ca {
			t.Fatal("the CA bundle was not passed")
		}
	}},
	{"deletion forgets the resource", func(t *testing.T) {
		e, f := mlflowEnv(t, nil)
		e.reconcile()
		f.answer(mlflowcheck.Rejected, rejection)
		e.deleteNow()
		e.reconcile()
		if !e.gone() || len(f.forgotten) != 1 || f.forgotten[0] != key {
			t.Fatalf("gone %v, forgotten %v", e.gone(), f.forgotten)
		}
		wantMetric(t, nil)
	}},
}

// selfSignedCA returns a PEM CA certificate (never used for a connection here; only passed along).
func selfSignedCA(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
