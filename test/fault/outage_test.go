package fault

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
)

// attemptBound is the most attempts one resource may make in a window of length d when every
// attempt fails, by the operator's own backoff (flags --min-retry-interval/--max-retry-interval)
// with the jitter always at its shortest, starting with a token that still has the full
// lifetime left (the quarter-of-remaining-life cap then shortens the waits most): an upper bound.
func attemptBound(d time.Duration) int {
	b := policy.Backoff{Initial: minRetry, Max: maxRetry}
	start := time.Unix(1_000_000, 0)
	exp := start.Add(tokenLifespan)
	n := 0
	for t, f := start, int32(1); t.Sub(start) < d; f++ {
		n++
		t = t.Add(b.Delay(f, t, &exp, 0.999999))
	}
	return n + 1 // plus one attempt in flight when the window opens
}

// Keycloak stopped for longer than a token lifetime under many live resources: no Secret is
// blanked or deleted, status says what is wrong (RenewalFailing while a token is valid, Ready
// False once it expired), the operator does not hammer Keycloak (requests within the backoff
// bound), and every resource is Ready again soon after Keycloak is back, with no failure left on
// record. (The one place a Keycloak outage is tested; integration's single-resource version was
// merged here.)
func TestKeycloakOutage(t *testing.T) {
	nRes := pick(50, 150)
	down := pick(15*time.Second, 60*time.Second)
	perNS := 10
	var namespaces []string
	for i := 0; i < nRes; i++ {
		if i%perNS == 0 {
			namespaces = append(namespaces, newNamespace(t, "outage"))
		}
		create(t, ccToken(namespaces[len(namespaces)-1], fmt.Sprintf("tok-%03d", i)))
	}
	op := startOperator(t, "op", namespaces)
	op.waitMetrics(t, time.Minute)
	took := waitAllReady(t, namespaces, nRes, 3*time.Minute)
	t.Logf("%d resources Ready %s after the operator started", nRes, fmtDur(took))
	w := watchSecrets(t, namespaces, 500*time.Millisecond)
	// Let the fleet rotate once under watch, so that renewals are spread by their jitter.
	time.Sleep(tokenLifespan)

	proxy.ResetCounts()
	stopped := time.Now()
	if err := kcServer.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			_ = kcServer.Restart(ctx)
		}
	})
	t.Logf("Keycloak stopped (Stop took %s); staying down for %s", fmtDur(time.Since(stopped)), down)
	// What status says during the outage: while a resource's token is still valid, Ready stays
	// True with reason RenewalFailing and RenewalFailing is True (KeycloakUnreachable); once it
	// has expired, Ready is False (KeycloakUnreachable) and its message says so.
	failingWhileValid := map[string]bool{}
	for time.Now().Before(stopped.Add(down)) {
		for _, o := range listTokens(t, namespaces) {
			r, f := cond(&o, authv1alpha1.ConditionReady), cond(&o, authv1alpha1.ConditionRenewalFailing)
			if r != nil && f != nil && r.Status == metav1.ConditionTrue && r.Reason == authv1alpha1.ReasonRenewalFailing &&
				f.Status == metav1.ConditionTrue && f.Reason == authv1alpha1.ReasonKeycloakUnreachable &&
				o.Status.ExpiresAt != nil && time.Now().Before(o.Status.ExpiresAt.Time) {
				failingWhileValid[o.Namespace+"/"+o.Name] = true
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	items := listTokens(t, namespaces)
	n, desc := readiness(items)
	t.Logf("before restart: %d/%d Ready(TokenValid); %s; %d resources seen Ready=True/RenewalFailing while their token was valid",
		n, nRes, desc, len(failingWhileValid))
	if len(failingWhileValid) == 0 {
		t.Error("no resource was seen Ready=True with reason RenewalFailing (KeycloakUnreachable) while its token was valid")
	}
	for i := range items {
		o := &items[i]
		if o.Status.ExpiresAt == nil || time.Now().Before(o.Status.ExpiresAt.Time) {
			continue
		}
		if r := cond(o, authv1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionFalse || r.Reason != authv1alpha1.ReasonKeycloakUnreachable || !strings.Contains(r.Message, "expired") {
			t.Errorf("%s/%s, token expired at %s: Ready %s, want False/KeycloakUnreachable saying the token expired",
				o.Namespace, o.Name, o.Status.ExpiresAt.Format(time.RFC3339), condMessageOf(o, authv1alpha1.ConditionReady))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := kcServer.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	back := time.Now()
	outage := back.Sub(stopped)
	during := proxy.Counts()
	proxy.ResetCounts()

	healed := waitAllReady(t, namespaces, nRes, 2*time.Minute)
	w.Stop()
	blanked, deleted, tokens, notDue, polls := w.Snapshot()

	perResource := attemptBound(outage)
	bound := nRes * perResource
	metrics, _ := op.Metrics()
	t.Logf("FIGURE outage: resources=%d keycloak_down=%s requests_during_outage=%d (token endpoint %d) bound=%d (%d per resource) "+
		"time_to_all_ready=%s secrets_blanked=%d secrets_deleted=%d secret_polls=%d tokens_seen=%d not_due=%d unreachable_metric=%v",
		nRes, fmtDur(outage), during.Total, during.Grants["client_credentials"], bound, perResource, fmtDur(healed),
		blanked, deleted, polls, tokens, notDue, metrics.Sum("mlflow_token_keycloak_requests_total", `outcome="KeycloakUnreachable"`))
	if blanked != 0 || deleted != 0 {
		t.Errorf("%d Secrets blanked and %d deleted during the outage", blanked, deleted)
	}
	if during.Total > bound {
		t.Errorf("%d requests to Keycloak during a %s outage, more than the backoff allows (%d)", during.Total, outage, bound)
	}
	if during.Total == 0 {
		t.Errorf("no attempt at all during the outage")
	}
	if !op.Alive() {
		t.Errorf("the operator exited")
	}
	// Healed means healed: no failure left on record.
	for _, o := range listTokens(t, namespaces) {
		if f := cond(&o, authv1alpha1.ConditionRenewalFailing); o.Status.FailedAttempts != 0 || f == nil || f.Status != metav1.ConditionFalse {
			t.Errorf("%s/%s after recovery: failedAttempts %d, RenewalFailing %s", o.Namespace, o.Name, o.Status.FailedAttempts, condMessageOf(&o, authv1alpha1.ConditionRenewalFailing))
		}
	}
}
