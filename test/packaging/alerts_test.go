package packaging

import (
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
)

// end is the last evaluation of every scenario ("now").
const end = 1_800_000_000.0

const (
	minute = 60.0
	hour   = 3600.0
)

func always(float64) bool { return true }

// downBetween is a Keycloak that does not answer from from to to.
func downBetween(from, to float64) func(float64) bool {
	return func(t float64) bool { return t < from || t >= to }
}

// fleet returns n tokens of one lifetime whose renewals are spread over a renewal period, with
// jitters spread over 0-10%, created from start on, all talking to the same Keycloak, and all
// accepted by MLflow.
func fleet(prefix string, n int, lifetime, start float64, kc func(float64) bool) []simToken {
	var out []simToken
	for i := range n {
		out = append(out, simToken{namespace: "team-a", name: prefix + "-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26),
			lifetime: lifetime, jitter: 0.1 * float64(i) / float64(n), created: start + float64(i)*(2*lifetime/3)/float64(n), keycloakUp: kc,
			mlflow: alwaysAccepts})
	}
	return out
}

// TestPrometheusAlertsFire evaluates the alerts of config/prometheus/rules.yaml with
// Prometheus' own alerting rules (pending, `for`, templates) every 30 s over simulated timelines
// scraped every 30 s, and checks that each alert fires for exactly the tokens or operators it is
// meant for, when it is meant to, and that a healthy fleet, a Keycloak restart and a leader
// failover fire nothing.
func TestPrometheusAlertsFire(t *testing.T) {
	tool(t, "promql-check")
	leader := operator{pod: "mlflow-token-operator-controller-manager-7d9f-a"}

	t.Run("fleet with one problem of each kind", func(t *testing.T) {
		start := end - 3*hour
		tl := newTimeline(start, end)
		tl.addOperator(leader)
		keycloakB := downBetween(end-70*minute, math.Inf(1)) // one team's Keycloak went down and stays down
		mlflowFixed := end - 39*minute
		fixedAt := func(fix float64) func(float64) mlflowAnswer {
			return func(t float64) mlflowAnswer {
				if t < fix {
					return mlflowRejects
				}
				return mlflowAccepts
			}
		}
		tokens := []simToken{
			{namespace: "team-a", name: "healthy-5m", lifetime: 300, jitter: 0.05, created: start, mlflow: alwaysAccepts},
			{namespace: "team-a", name: "healthy-1h", lifetime: hour, jitter: 0.02, created: start, mlflow: alwaysAccepts},
			{namespace: "team-a", name: "healthy-mlflow-down", lifetime: 300, created: start, // MLflow never answers: no series, no alert
				mlflow: func(float64) mlflowAnswer { return mlflowNoAnswer }},
			{namespace: "team-a", name: "healthy-60s", lifetime: 60, jitter: 0.07, created: start},
			{namespace: "team-a", name: "healthy-12s", lifetime: 12, created: start},
			{namespace: "team-a", name: "misconfigured", lifetime: 300, created: end - 30*minute, misconfigured: true},
			{namespace: "team-b", name: "keycloak-down-5m", lifetime: 300, jitter: 0.05, created: start, keycloakUp: keycloakB},
			{namespace: "team-b", name: "keycloak-down-1h", lifetime: hour, created: start, keycloakUp: keycloakB},
			{namespace: "team-a", name: "stuck", lifetime: 300, jitter: 0.03, created: start, stuckAt: end - 30*minute},
			{namespace: "team-a", name: "chain-rt-48h", lifetime: 300, created: start},
			{namespace: "team-a", name: "chain-rt-12h", lifetime: 300, created: start},
			{namespace: "team-a", name: "chain-pw-12h", lifetime: 300, created: start},
			{namespace: "team-a", name: "chain-offline-29d", lifetime: 300, created: start},
			// MLflow rejects every token of one resource (an audience mapper is missing).
			{namespace: "team-a", name: "mlflow-rejected", lifetime: 300, created: end - 30*minute,
				mlflow: func(float64) mlflowAnswer { return mlflowRejects }},
			// MLflow rejects the first token, is fixed a minute later; the next rotation is
			// checked and accepted (200 s later): too soon to alert.
			{namespace: "team-a", name: "mlflow-fixed", lifetime: 300, created: end - 40*minute, mlflow: fixedAt(mlflowFixed)},
			// The same for a one-hour token: it is checked again only at its next rotation, 40
			// minutes later, and alerts until then.
			{namespace: "team-c", name: "mlflow-fixed-1h", lifetime: hour, created: start, mlflow: fixedAt(start + minute)},
		}
		tl.addTokens(leader, false, tokens...)
		for _, c := range []struct {
			name, grant string
			in          float64
		}{
			{"chain-rt-48h", "RefreshToken", 48 * hour},
			{"chain-rt-12h", "RefreshToken", 12 * hour},
			{"chain-pw-12h", "Password", 12 * hour}, // logs in again by itself: no alert
			{"chain-offline-29d", "RefreshToken", 29 * 24 * hour},
		} {
			tl.add(scrapedLabels(chainExpiryMetric, leader.pod, "namespace", "team-a", "name", c.name, "grant", c.grant),
				func(float64) (float64, bool) { return end + c.in, true })
		}
		tl.addIssuers(leader,
			simIssuer{kind: "ClusterKeycloakIssuer", name: "shared", created: start},
			simIssuer{kind: "KeycloakIssuer", namespace: "team-a", name: "healthy", created: start},
			// team-b's Keycloak is down: its issuer turns NotReady at its next check.
			simIssuer{kind: "KeycloakIssuer", namespace: "team-b", name: "keycloak-b", created: start, keycloakUp: keycloakB},
			// Issuers that never pass their check (a wrong URL, a missing client secret).
			simIssuer{kind: "KeycloakIssuer", namespace: "team-a", name: "wrong-url", created: end - 30*minute, misconfigured: true},
			simIssuer{kind: "ClusterKeycloakIssuer", name: "broken", created: end - 20*minute, misconfigured: true},
			// Created broken and fixed 5 minutes later: no alert.
			simIssuer{kind: "KeycloakIssuer", namespace: "team-a", name: "fixed", created: end - 40*minute,
				keycloakUp: func(t float64) bool { return t >= end-35*minute }},
		)
		evals := tl.evaluate(t)

		want := []string{
			"MLflowTokenNotReady[critical] team-a/misconfigured",
			"MLflowTokenNotReady[critical] team-b/keycloak-down-5m",
			"MLflowTokenNotReady[critical] team-b/keycloak-down-1h",
			"MLflowTokenRenewalFailing[warning] team-a/misconfigured",
			"MLflowTokenRenewalFailing[warning] team-b/keycloak-down-5m",
			"MLflowTokenRenewalFailing[warning] team-b/keycloak-down-1h",
			"MLflowTokenRenewalOverdue[critical] team-a/stuck",
			"MLflowTokenRefreshChainExpiring[warning] team-a/chain-rt-48h",
			"MLflowTokenRefreshChainExpiring[warning] team-a/chain-rt-12h",
			"MLflowTokenRefreshChainExpiring[critical] team-a/chain-rt-12h",
			"MLflowTokenRejectedByMLflow[warning] team-a/mlflow-rejected",
			"MLflowTokenIssuerNotReady[warning] KeycloakIssuer team-b/keycloak-b",
			"MLflowTokenIssuerNotReady[warning] KeycloakIssuer team-a/wrong-url",
			"MLflowTokenIssuerNotReady[warning] ClusterKeycloakIssuer broken",
		}
		expectAt(t, evals, end, want...)
		cover(want...)
		quiet := map[string]bool{"ClusterKeycloakIssuer shared": true, "KeycloakIssuer team-a/healthy": true,
			"KeycloakIssuer team-a/fixed": true, "team-a/mlflow-fixed": true}
		for _, f := range evals {
			for _, n := range f.names() {
				_, key, _ := strings.Cut(n, "] ")
				if quiet[key] || strings.HasPrefix(key, "team-a/healthy-") {
					t.Errorf("at %.0fs: %s fires for a healthy or quickly fixed resource", f.Time-end, n)
				}
			}
		}

		// Issuers alert 10 minutes after the check that failed, with their kind and name in the
		// summary; a ClusterKeycloakIssuer's without a namespace.
		for id, since := range map[string]float64{
			"MLflowTokenIssuerNotReady[warning] KeycloakIssuer team-a/wrong-url": end - 30*minute,
			"MLflowTokenIssuerNotReady[warning] ClusterKeycloakIssuer broken":    end - 20*minute,
		} {
			if fired := firstFiring(evals, id); fired < since+10*minute || fired > since+11*minute {
				t.Errorf("%s fired %.0fs after the issuer failed its check, want 10-11 min", id, fired-since)
			}
		}
		for _, a := range at(t, evals, end).Firing {
			if a.Alert != "MLflowTokenIssuerNotReady" {
				continue
			}
			want := map[string]string{"broken": "ClusterKeycloakIssuer broken is not Ready",
				"wrong-url": "KeycloakIssuer team-a/wrong-url is not Ready", "keycloak-b": "KeycloakIssuer team-b/keycloak-b is not Ready"}[a.Labels["name"]]
			if a.Annotations["summary"] != want {
				t.Errorf("IssuerNotReady summary %q, want %q", a.Annotations["summary"], want)
			}
			if a.Labels["name"] == "broken" && !strings.Contains(a.Annotations["description"], "`kubectl describe clusterkeycloakissuer broken`") {
				t.Errorf("IssuerNotReady for a ClusterKeycloakIssuer should name its kubectl command: %s", a.Annotations["description"])
			}
		}

		// MLflow: a rejection alerts 5 minutes after the first check; one cleared by the next
		// rotation of a 5-minute token does not (and was there: the gauge was 0 for a while);
		// a one-hour token stays rejected until its next rotation is checked.
		if fired := firstFiring(evals, "MLflowTokenRejectedByMLflow[warning] team-a/mlflow-rejected"); fired < end-25*minute || fired > end-24*minute {
			t.Errorf("RejectedByMLflow fired %.0fs after the first rejection, want 5-6 min", fired-(end-30*minute))
		}
		rejectedFor := func(name string) float64 {
			for _, tk := range tokens {
				if tk.name != name {
					continue
				}
				changes, _ := tk.simulate(end)
				total := 0.0
				for i, c := range changes {
					if c.s.mlflow == 0 {
						until := end
						if i+1 < len(changes) {
							until = changes[i+1].t
						}
						total += until - c.t
					}
				}
				return total
			}
			return 0
		}
		if d := rejectedFor("mlflow-fixed"); d < 2*minute {
			t.Errorf("mlflow-fixed was rejected for %.0fs: the scenario should leave the gauge at 0 for minutes", d)
		} else {
			t.Logf("mlflow-fixed: MLflow's rejection showed for %.0fs, no alert", d)
		}
		rejected1h := "MLflowTokenRejectedByMLflow[warning] team-c/mlflow-fixed-1h"
		cover(rejected1h)
		if fired := firstFiring(evals, rejected1h); fired < start+5*minute || fired > start+6*minute {
			t.Errorf("%s fired %.0fs after the rejection, want 5-6 min", rejected1h, fired-start)
		}
		if d := rejectedFor("mlflow-fixed-1h"); d < 35*minute || d > 41*minute {
			t.Errorf("mlflow-fixed-1h was rejected for %.0fs, want until its next rotation, 40 min", d)
		}

		// The tokens whose Keycloak went down: ExpiringWhileRenewalFails warns before they
		// expire (after 90 s of failures, within the last 10 minutes), and resolves once they
		// have expired, when NotReady takes over.
		for _, name := range []string{"keycloak-down-5m", "keycloak-down-1h"} {
			var tk simToken
			for _, x := range tokens {
				if x.name == name {
					tk = x
				}
			}
			expiry, failingSince := lastValidToken(tk, end)
			id := "MLflowTokenExpiringWhileRenewalFails[critical] team-b/" + name
			fired := firstFiring(evals, id)
			cover(id)
			switch {
			case math.IsNaN(fired):
				t.Errorf("%s never fired (token expired at %.0fs, failing since %.0fs)", id, expiry-end, failingSince-end)
			case fired >= expiry:
				t.Errorf("%s fired %.0fs after the token expired, want before", id, fired-expiry)
			case fired-math.Max(failingSince, expiry-600) < 90:
				t.Errorf("%s fired %.0fs after the failures began and %.0fs before expiry: sooner than its 90 s", id, fired-failingSince, expiry-fired)
			default:
				t.Logf("%s fired %.0fs before the token expired (failing for %.0fs)", id, expiry-fired, fired-failingSince)
			}
			if name == "keycloak-down-1h" && expiry-fired < 8*minute {
				t.Errorf("%s: a one-hour token should be warned about at least 8 minutes before expiry, got %.0fs", id, expiry-fired)
			}
			if firstFiring(evals, "MLflowTokenNotReady[critical] team-b/"+name) < expiry+5*minute {
				t.Errorf("NotReady for %s fired before the token had been expired for 5 minutes", name)
			}
		}

		// The stuck token: RenewalOverdue fires after half of the margin between the planned
		// renewal and the expiry, before the token expires.
		var stuck simToken
		for _, x := range tokens {
			if x.name == "stuck" {
				stuck = x
			}
		}
		changes, _ := stuck.simulate(end)
		last := changes[len(changes)-1].s
		fired := firstFiring(evals, "MLflowTokenRenewalOverdue[critical] team-a/stuck")
		margin := last.expiry - last.renewal
		switch {
		case math.IsNaN(fired) || fired >= last.expiry:
			t.Errorf("RenewalOverdue fired at %.0fs, want before the stuck token's expiry at %.0fs", fired-end, last.expiry-end)
		case fired-last.renewal < math.Max(margin/2, 60):
			t.Errorf("RenewalOverdue fired %.0fs after the missed renewal, sooner than half the %.0fs margin", fired-last.renewal, margin)
		default:
			t.Logf("RenewalOverdue fired %.0fs after the missed renewal, %.0fs before expiry", fired-last.renewal, last.expiry-fired)
		}
	})

	t.Run("Keycloak restarted for 60 s: nothing fires", func(t *testing.T) {
		start := end - 2*hour
		outage := end - 60*minute
		kc := downBetween(outage, outage+60)
		var tokens []simToken
		tokens = append(tokens, fleet("five-minute", 60, 300, start, kc)...)
		tokens = append(tokens, fleet("one-hour", 10, hour, start, kc)...)
		// Not here: tokens of a minute or less. Their 20 s margin cannot ride out a minute
		// without Keycloak, they expire, and the backoff they reached by then (up to 5 min)
		// keeps them broken after Keycloak is back: RenewalFailing and NotReady fire, rightly.
		tl := newTimeline(start, end)
		tl.addOperator(leader)
		calls := tl.addTokens(leader, true, tokens...)
		// A resource deleted during the restart: revocation fails three times, then succeeds.
		tl.add(scrapedLabels(metrics.NameRevocations, leader.pod, "outcome", "failed"), func(ts float64) (float64, bool) {
			return float64(countBefore(ts, outage+5, outage+9, outage+17)), true
		})
		tl.add(scrapedLabels(metrics.NameRevocations, leader.pod, "outcome", "revoked"), func(ts float64) (float64, bool) {
			return float64(countBefore(ts, outage+65)), true
		})
		// The issuer's periodic check comes during the restart (its checks are 5 minutes apart
		// from start, and the restart begins 12 of them later).
		issuer := simIssuer{kind: "KeycloakIssuer", namespace: "team-a", name: "kc", created: start, keycloakUp: kc}
		tl.addIssuers(leader, issuer, simIssuer{kind: "ClusterKeycloakIssuer", name: "shared", created: start + 7})
		expectNothingFires(t, tl.evaluate(t))
		if d := issuer.notReadyFor(start, end); d < 60 {
			t.Errorf("the issuer was NotReady for %.0fs during the restart: the scenario should have hit its check", d)
		} else {
			t.Logf("the issuer was NotReady for %.0fs during the restart", d)
		}

		// The scenario must have hurt: many tokens failed during the restart, some several times.
		failedTokens, maxFailures, expired := restartImpact(tokens, end, outage, outage+60)
		unreachable := 0
		for _, c := range calls {
			if c.outcome == "KeycloakUnreachable" {
				unreachable++
			}
		}
		t.Logf("during the restart: %d tokens failed (up to %d times in a row), %d expired, %d calls to Keycloak failed",
			failedTokens, maxFailures, expired, unreachable)
		if failedTokens < 15 || maxFailures < 4 || expired != 0 {
			t.Errorf("the simulated restart should make many tokens fail several times and none expire (failed tokens %d, max failures %d, expired %d)", failedTokens, maxFailures, expired)
		}
	})

	t.Run("Keycloak down for 15 minutes: the same fleet alerts", func(t *testing.T) {
		// The control of the restart case: the same fleet, a longer outage.
		start := end - 2*hour
		outage := end - 60*minute
		kc := downBetween(outage, outage+15*minute)
		var tokens []simToken
		tokens = append(tokens, fleet("five-minute", 60, 300, start, kc)...)
		tokens = append(tokens, fleet("one-hour", 10, hour, start, kc)...)
		tl := newTimeline(start, end)
		tl.addOperator(leader)
		tl.addTokens(leader, true, tokens...)
		tl.addIssuers(leader, simIssuer{kind: "KeycloakIssuer", namespace: "team-a", name: "kc", created: start, keycloakUp: kc})
		evals := tl.evaluate(t)
		if fired := firstFiring(evals, "MLflowTokenIssuerNotReady[warning] KeycloakIssuer team-a/kc"); fired < outage+10*minute {
			t.Errorf("IssuerNotReady fired %.0fs into the outage, want 10 minutes after the failed check at the earliest", fired-outage)
		}
		for _, want := range []string{
			"MLflowTokenExpiringWhileRenewalFails[critical] team-a/five-minute-a",
			"MLflowTokenNotReady[critical] team-a/five-minute-a",
			"MLflowTokenRenewalFailing[warning] team-a/five-minute-a",
			"MLflowTokenKeycloakErrors[warning] token",
			"MLflowTokenIssuerNotReady[warning] KeycloakIssuer team-a/kc",
		} {
			if fired := firstFiring(evals, want); math.IsNaN(fired) {
				t.Errorf("%s never fired during a 15-minute Keycloak outage", want)
			} else {
				t.Logf("%s fired %.0fs into the outage", want, fired-outage)
				cover(want)
			}
		}
		// And everything resolves after Keycloak is back.
		expectAt(t, evals, end)
	})

	t.Run("operator gone", func(t *testing.T) {
		start := end - hour
		gone := end - 20*minute
		op := operator{pod: leader.pod, alive: func(ts float64) bool { return ts < gone }}
		tl := newTimeline(start, end)
		tl.addOperator(op)
		tl.addTokens(op, true, fleet("tok", 5, 300, start, always)...)
		evals := tl.evaluate(t)
		expectAt(t, evals, gone+4*minute+30)
		want := "MLflowTokenOperatorAbsent[critical] mlflow-token-operator"
		expectAt(t, evals, end, want)
		if fired := firstFiring(evals, want); fired < gone+5*minute || fired > gone+6*minute+30 {
			t.Errorf("OperatorAbsent fired %.0fs after the operator went, want 5-6 min", fired-gone)
		}
		cover(want)
	})

	t.Run("operator running but not answering scrapes", func(t *testing.T) {
		start := end - hour
		hung := end - 20*minute
		tl := newTimeline(start, end)
		// The target stays (the pod exists) but scrapes fail: up is 0 and the operator's own
		// series go stale.
		tl.add(scrapedLabels("up", leader.pod), func(ts float64) (float64, bool) {
			if ts < hung {
				return 1, true
			}
			return 0, true
		})
		op := operator{pod: leader.pod, alive: func(ts float64) bool { return ts < hung }}
		tl.add(scrapedLabels("leader_election_master_status", leader.pod, "name", leaseName), func(ts float64) (float64, bool) { return 1, op.isAlive(ts) })
		tl.addTokens(op, false, fleet("tok", 5, 300, start, always)...)
		expectAt(t, tl.evaluate(t), end, "MLflowTokenOperatorAbsent[critical] mlflow-token-operator@"+operatorNS)
	})

	t.Run("one of two replicas gone: nothing fires", func(t *testing.T) {
		start := end - hour
		standby := operator{pod: "mlflow-token-operator-controller-manager-7d9f-b", alive: func(ts float64) bool { return ts < end-40*minute },
			leader: func(float64) bool { return false }}
		tl := newTimeline(start, end)
		tl.addOperator(leader)
		tl.addOperator(standby)
		tl.addTokens(leader, true, fleet("tok", 5, 300, start, always)...)
		expectNothingFires(t, tl.evaluate(t))
	})

	t.Run("no leader", func(t *testing.T) {
		start := end - hour
		lost := end - 20*minute
		a := operator{pod: leader.pod, leader: func(ts float64) bool { return ts < lost }}
		b := operator{pod: "mlflow-token-operator-controller-manager-7d9f-b", leader: func(float64) bool { return false }}
		tl := newTimeline(start, end)
		tl.addOperator(a)
		tl.addOperator(b)
		tl.addTokens(a, true, fleet("tok", 5, 300, start, always)...)
		evals := tl.evaluate(t)
		want := "MLflowTokenOperatorNoLeader[critical] " + operatorJob + "@" + operatorNS
		expectAt(t, evals, end, want)
		if fired := firstFiring(evals, want); fired < lost+5*minute {
			t.Errorf("NoLeader fired %.0fs after the leader was lost, want at least 5 min", fired-lost)
		}
		cover(want)
	})

	t.Run("leader failover: nothing fires", func(t *testing.T) {
		start := end - hour
		lost := end - 20*minute
		// a dies; b takes the Lease 20 s later and re-exports every token.
		a := operator{pod: leader.pod, alive: func(ts float64) bool { return ts < lost }}
		b := operator{pod: "mlflow-token-operator-controller-manager-7d9f-b", leader: func(ts float64) bool { return ts >= lost+20 }}
		tl := newTimeline(start, end)
		tl.addOperator(a)
		tl.addOperator(b)
		tokens := fleet("tok", 5, 300, start, always)
		tl.addTokens(a, true, tokens...)
		tl.addTokens(b, false, tokens...)
		expectNothingFires(t, tl.evaluate(t))
	})

	t.Run("pod nudges", func(t *testing.T) {
		start := end - 90*minute
		tokens := fleet("tok", 20, 300, start, always)
		nudgesFailing := "MLflowTokenPodNudgesFailing[warning] " + operatorJob + "@" + operatorNS
		nudged := []string{"nudged"}

		// An API server that throttles every nudge for 5 minutes (each works at its retry), and
		// pods of finished jobs deleted before their nudge: nothing fires.
		blip := end - 45*minute
		tl := newTimeline(start, end)
		tl.addOperator(leader)
		tl.addTokens(leader, false, tokens...)
		failed := tl.addNudges(leader, tokens, 3, func(ts float64, token, pod int) []string {
			switch {
			case ts >= blip && ts < blip+5*minute:
				return []string{"throttled", "nudged"}
			case token%2 == 0 && pod == 0: // a sixth of the pods: neither nudged nor failed
				return []string{"gone"}
			}
			return nudged
		})
		if failed < 50 {
			t.Errorf("the throttled API server should fail many nudges, got %d", failed)
		}
		expectNothingFires(t, tl.evaluate(t))

		// The operator lost its permission to patch pods: every nudge is forbidden.
		lost := end - 30*minute
		tl = newTimeline(start, end)
		tl.addOperator(leader)
		tl.addTokens(leader, false, tokens...)
		tl.addNudges(leader, tokens, 3, func(ts float64, _, _ int) []string {
			if ts >= lost {
				return []string{"forbidden"}
			}
			return nudged
		})
		evals := tl.evaluate(t)
		expectAt(t, evals, end, nudgesFailing)
		cover(nudgesFailing)
		if fired := firstFiring(evals, nudgesFailing); fired < lost+15*minute || fired > lost+17*minute {
			t.Errorf("PodNudgesFailing fired %.0fs after the nudges began to fail, want 15-17 min", fired-lost)
		}

		// An admission webhook rejects the nudges of one team's pods, a fifth of them: it fires
		// with the ratio in its summary.
		tl = newTimeline(start, end)
		tl.addOperator(leader)
		tl.addTokens(leader, false, tokens...)
		tl.addNudges(leader, tokens, 3, func(_ float64, token, _ int) []string {
			if token%5 == 0 {
				return []string{"rejected"}
			}
			return nudged
		})
		evals = tl.evaluate(t)
		expectAt(t, evals, end, nudgesFailing)
		for _, a := range at(t, evals, end).Firing {
			if s := a.Annotations["summary"]; !regexp.MustCompile(`^(19|20|21)(\.\d+)?% of consumer pod nudges fail$`).MatchString(s) {
				t.Errorf("PodNudgesFailing summary %q, want about 20%%", s)
			}
		}
	})

	t.Run("Keycloak errors, slowness and abandoned revocations", func(t *testing.T) {
		start := end - hour
		tl := newTimeline(start, end)
		tl.addOperator(leader)
		tl.addTokens(leader, false, fleet("tok", 3, 300, start, always)...)
		perMinute := func(rate float64) func(float64) (float64, bool) {
			return func(ts float64) (float64, bool) { return (ts - start) / 60 * rate, true }
		}
		calls := func(endpoint, outcome string, rate float64) {
			tl.add(scrapedLabels(metrics.NameKeycloakRequests, leader.pod, "grant", "client_credentials", "endpoint", endpoint, "outcome", outcome), perMinute(rate))
		}
		// The token endpoint fails a third of the time (unreachable); the revocation endpoint
		// answers, but a third of the calls carry a wrong secret: a configuration error, not
		// Keycloak's fault.
		calls("token", "success", 10)
		calls("token", "KeycloakUnreachable", 5)
		calls("revoke", "success", 50)
		calls("revoke", "InvalidClientCredentials", 20)
		// Token calls take 5-10 s, revocations under 100 ms.
		for _, le := range []string{"0.1", "1", "5", "10", "15", "+Inf"} {
			tokenCount, revokeCount := 0.0, 70.0
			if le == "10" || le == "15" || le == "+Inf" {
				tokenCount = 15
			}
			tl.add(scrapedLabels(metrics.NameKeycloakDuration+"_bucket", leader.pod, "grant", "client_credentials", "endpoint", "token", "le", le), perMinute(tokenCount))
			tl.add(scrapedLabels(metrics.NameKeycloakDuration+"_bucket", leader.pod, "grant", "client_credentials", "endpoint", "revoke", "le", le), perMinute(revokeCount))
		}
		// One revocation abandoned five minutes ago, after failed attempts.
		tl.add(scrapedLabels(metrics.NameRevocations, leader.pod, "outcome", "abandoned"), func(ts float64) (float64, bool) {
			return float64(countBefore(ts, end-5*minute)), true
		})
		tl.add(scrapedLabels(metrics.NameRevocations, leader.pod, "outcome", "failed"), func(ts float64) (float64, bool) {
			return float64(countBefore(ts, end-10*minute, end-9*minute, end-7*minute)), true
		})
		tl.add(scrapedLabels(metrics.NameRevocations, leader.pod, "outcome", "revoked"), perMinute(2))
		evals := tl.evaluate(t)
		want := []string{
			"MLflowTokenKeycloakErrors[warning] token",
			"MLflowTokenKeycloakSlow[info] token",
			"MLflowTokenRevocationAbandoned[warning] abandoned",
		}
		expectAt(t, evals, end, want...)
		cover(want...)
		// Abandoned revocations are news for 15 minutes, then resolve.
		expectAt(t, evals, end-5*minute-30, "MLflowTokenKeycloakErrors[warning] token", "MLflowTokenKeycloakSlow[info] token")
	})

	t.Run("CSI driver: expired tokens and an unregistered plugin", func(t *testing.T) {
		start := end - hour
		tl := newTimeline(start, end)
		tl.addOperator(leader)
		broken := end - 10*minute
		pluginA, pluginB := "mto-csi-node-a", "mto-csi-node-b"
		expired := func(ns string, from, to float64, n float64) {
			tl.add(scrapedLabels(metrics.NameCSIExpired, pluginA, "namespace", ns, "issuer", "ClusterKeycloakIssuer/mlflow"), func(ts float64) (float64, bool) {
				if ts >= from && ts < to {
					return n, true
				}
				return 0, true
			})
		}
		expired("team-a", broken, math.Inf(1), 2)          // rotations fail for good
		expired("team-b", end-30*minute, end-29*minute, 1) // a Keycloak restart: expired for a minute, no alert
		tl.add(scrapedLabels(metrics.NameCSIRegistered, pluginA), func(float64) (float64, bool) { return 1, true })
		tl.add(scrapedLabels(metrics.NameCSIRegistered, pluginB), func(ts float64) (float64, bool) {
			if ts >= broken {
				return 0, true
			}
			return 1, true
		})
		evals := tl.evaluate(t)
		want := []string{"MLflowTokenCSIExpiredTokens[critical] @team-a", "MLflowTokenCSIPluginNotRegistered[warning] metrics"}
		expectAt(t, evals, end, want...)
		expectAt(t, evals, end-29*minute)
		expectAt(t, evals, broken+90)
		cover(want...)
	})

	// Every alert of rules.yaml was shown to fire in some scenario.
	for _, r := range alertRules(t) {
		if !covered[r.Alert] {
			t.Errorf("alert %s is never shown to fire: add a scenario", r.Alert)
		}
	}
}

// countBefore counts the events at or before ts.
func countBefore(ts float64, events ...float64) int {
	n := 0
	for _, e := range events {
		if e <= ts {
			n++
		}
	}
	return n
}

// lastValidToken returns the expiry of the token's last successful issue before end, and when
// the failures that followed it began.
func lastValidToken(tk simToken, end float64) (expiry, failingSince float64) {
	changes, _ := tk.simulate(end)
	failingSince = math.NaN()
	for _, c := range changes {
		if c.s.failed == 0 {
			expiry, failingSince = c.s.expiry, math.NaN()
		} else if math.IsNaN(failingSince) {
			failingSince = c.t
		}
	}
	return expiry, failingSince
}

// restartImpact counts, for an outage from..to, the tokens with a failed attempt in it, the
// longest run of failures, and the tokens that were left without a valid token for a while.
func restartImpact(tokens []simToken, end, from, to float64) (failedTokens, maxFailures, expired int) {
	for _, tk := range tokens {
		changes, _ := tk.simulate(end)
		failed, wasExpired := false, false
		for _, c := range changes {
			if c.t >= from && c.t < to+5*minute {
				failed = failed || c.s.failed > 0
				wasExpired = wasExpired || (c.s.issued && c.s.ready == 0)
				maxFailures = max(maxFailures, int(c.s.failed))
			}
		}
		if failed {
			failedTokens++
		}
		if wasExpired {
			expired++
		}
	}
	return failedTokens, maxFailures, expired
}
