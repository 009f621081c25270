package packaging

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
)

// This file simulates what Prometheus scrapes from the operator over time, so that the alerts of
// config/prometheus/rules.yaml can be evaluated by Prometheus' own alerting rules
// (promql-check alerts) over realistic timelines: tokens that rotate, Keycloaks that restart or
// stay down, an operator that is stuck, gone or without a leader.

const (
	scrapeInterval = 30.0 // the ServiceMonitor's interval
	evalInterval   = 30.0 // Prometheus' rule evaluation interval
	operatorNS     = "mlflow-token-operator-system"
	operatorJob    = "mlflow-token-operator"
	leaseName      = "mlflow-token-operator.auth.mlflow-token-operator.io"
	// chainExpiryMetric is the per-resource gauge of refresh chains' ends.
	chainExpiryMetric = metrics.NameChainExpiry
)

// simToken is one MLflowAccessToken as the operator handles it (see the README's "How renewal
// works"): the first attempt at created; after a success, the next renewal at two thirds of the
// lifetime minus a jitter; after a failure, a retry after 2 s doubling to 5 min, capped at a
// quarter of the remaining lifetime; Ready turns False at the first attempt after expiry.
type simToken struct {
	namespace, name string
	lifetime        float64
	jitter          float64 // fraction of the lifetime taken off the renewal time, 0 to 0.1
	created         float64
	// keycloakUp says whether this token's Keycloak answers at t (nil: always).
	keycloakUp func(t float64) bool
	// misconfigured tokens fail every attempt with a configuration error (wrong client secret).
	misconfigured bool
	// stuckAt: the operator stops acting on this token from then on (0: never); its series
	// keep their last values, as a stuck but running process would serve them.
	stuckAt float64
	// mlflow, when set, is the resource's MLflow (a tracking URI is configured): what it answers
	// at t when asked about a new token (see mlflowAnswer).
	mlflow func(t float64) mlflowAnswer
}

// mlflowAnswer is what MLflow answers the operator's check of a new token.
type mlflowAnswer int

const (
	mlflowNoAnswer mlflowAnswer = iota // unreachable, 5xx: MLflowAccepted=Unknown
	mlflowAccepts                      // 2xx: MLflowAccepted=True
	mlflowRejects                      // 401/403: MLflowAccepted=False
)

func alwaysAccepts(float64) mlflowAnswer { return mlflowAccepts }

type tokenState struct {
	expiry, renewal, ready, failed float64
	issued                         bool
	// mlflow is the mlflow_token_mlflow_accepted gauge: 1, 0, or -1 for no series.
	mlflow float64
}

type stateChange struct {
	t float64
	s tokenState
}

// attempt is one call to Keycloak's token endpoint.
type attempt struct {
	t       float64
	outcome string
}

// simulate runs the token from its creation to end and returns its state changes and its
// calls to Keycloak.
func (tk simToken) simulate(end float64) ([]stateChange, []attempt) {
	var changes []stateChange
	var calls []attempt
	s := tokenState{mlflow: -1}
	for t := tk.created; t <= end; {
		if tk.stuckAt > 0 && t >= tk.stuckAt {
			break
		}
		up := tk.keycloakUp == nil || tk.keycloakUp(t)
		switch {
		case up && !tk.misconfigured:
			calls = append(calls, attempt{t, "success"})
			// A new token is shown to MLflow, except at a routine renewal (the previous token still
			// valid) of a token MLflow accepted; the last answer stands until the next one.
			routine := s.issued && s.expiry > t && s.mlflow == 1
			answer := s.mlflow
			if tk.mlflow != nil && !routine {
				switch tk.mlflow(t) {
				case mlflowAccepts:
					answer = 1
				case mlflowRejects:
					answer = 0
				default:
					answer = -1
				}
			}
			s = tokenState{expiry: t + tk.lifetime, renewal: math.Floor(t + (2.0/3-tk.jitter)*tk.lifetime), ready: 1, issued: true, mlflow: answer}
		default:
			outcome := "KeycloakUnreachable"
			if up {
				outcome = "InvalidClientCredentials"
			}
			calls = append(calls, attempt{t, outcome})
			s.failed++
			wait := math.Min(2*math.Pow(2, s.failed-1), 300)
			if s.issued && s.expiry > t {
				wait = math.Min(wait, (s.expiry-t)/4)
			}
			wait = math.Max(wait, 1)
			s.renewal = t + wait
			s.ready = 0
			if s.issued && s.expiry > t {
				s.ready = 1
			}
		}
		changes = append(changes, stateChange{t, s})
		t = s.renewal
	}
	return changes, calls
}

// timeline collects the series of one scenario, scraped every scrapeInterval from start to end.
type timeline struct {
	start, end float64
	series     []evalSeries
}

func newTimeline(start, end float64) *timeline { return &timeline{start: start, end: end} }

func (tl *timeline) scrapes() []float64 {
	var out []float64
	for ts := tl.start; ts <= tl.end; ts += scrapeInterval {
		out = append(out, ts)
	}
	return out
}

// add adds a series sampled from value at every scrape where present(ts) holds; when a series
// ends before the timeline does, it gets a staleness marker at the next scrape, as Prometheus
// writes when a series or its target disappears.
func (tl *timeline) add(labels map[string]string, value func(ts float64) (float64, bool)) {
	s := evalSeries{Labels: labels}
	last := math.Inf(-1)
	for _, ts := range tl.scrapes() {
		if v, ok := value(ts); ok {
			s.Samples = append(s.Samples, [2]float64{ts, v})
			last = ts
		}
	}
	if len(s.Samples) == 0 {
		return
	}
	if last+scrapeInterval <= tl.end {
		s.StaleAt = last + scrapeInterval
	}
	tl.series = append(tl.series, s)
}

// scrapedLabels are the labels Prometheus puts on a series scraped from the operator pod through
// the ServiceMonitor (jobLabel app.kubernetes.io/name, honorLabels): the operator's namespace
// unless the series brings its own.
func scrapedLabels(name, pod string, kv ...string) map[string]string {
	m := map[string]string{"__name__": name, "job": operatorJob, "namespace": operatorNS,
		"instance": pod + ":8080", "pod": pod, "container": "manager", "endpoint": "metrics", "service": "mlflow-token-operator-controller-manager-metrics-service"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// operator describes the operator process(es) of a scenario.
type operator struct {
	pod string
	// alive says whether the pod runs (and answers scrapes) at ts (nil: always).
	alive func(ts float64) bool
	// leader says whether it holds the Lease at ts (nil: always).
	leader func(ts float64) bool
}

func (o operator) isAlive(ts float64) bool { return o.alive == nil || o.alive(ts) }
func (o operator) isLeader(ts float64) bool {
	return o.isAlive(ts) && (o.leader == nil || o.leader(ts))
}

// addOperator adds the operator's own series: up and leader_election_master_status.
func (tl *timeline) addOperator(o operator) {
	tl.add(scrapedLabels("up", o.pod), func(ts float64) (float64, bool) { return 1, o.isAlive(ts) })
	tl.add(scrapedLabels("leader_election_master_status", o.pod, "name", leaseName), func(ts float64) (float64, bool) {
		if !o.isAlive(ts) {
			return 0, false
		}
		if o.isLeader(ts) {
			return 1, true
		}
		return 0, true
	})
}

// addTokens simulates the tokens and adds their per-token series as exported by the leader
// (leader: the operator whose pod label they carry, while it leads) and, when withCalls, the
// Keycloak request counters and latency histogram their calls make.
func (tl *timeline) addTokens(leader operator, withCalls bool, tokens ...simToken) (calls []attempt) {
	for _, tk := range tokens {
		changes, c := tk.simulate(tl.end)
		calls = append(calls, c...)
		at := func(ts float64) (tokenState, bool) {
			if !leader.isLeader(ts) {
				return tokenState{}, false
			}
			i := sort.Search(len(changes), func(i int) bool { return changes[i].t > ts })
			if i == 0 {
				return tokenState{}, false
			}
			return changes[i-1].s, true
		}
		lbl := func(metric string) map[string]string {
			return scrapedLabels(metric, leader.pod, "namespace", tk.namespace, "name", tk.name)
		}
		tl.add(lbl(metrics.NameExpiry), func(ts float64) (float64, bool) {
			s, ok := at(ts)
			return s.expiry, ok && s.issued
		})
		tl.add(lbl(metrics.NameRenewal), func(ts float64) (float64, bool) { s, ok := at(ts); return s.renewal, ok })
		tl.add(lbl(metrics.NameReady), func(ts float64) (float64, bool) { s, ok := at(ts); return s.ready, ok })
		tl.add(lbl(metrics.NameFailedAttempts), func(ts float64) (float64, bool) { s, ok := at(ts); return s.failed, ok })
		tl.add(lbl(metrics.NameMLflowAccepted), func(ts float64) (float64, bool) {
			s, ok := at(ts)
			return s.mlflow, ok && s.mlflow >= 0
		})
	}
	if withCalls {
		tl.addCalls(leader, calls)
	}
	return calls
}

// addCalls adds the counters of Keycloak token calls (by outcome) and their latency (50 ms each).
func (tl *timeline) addCalls(o operator, calls []attempt) {
	outcomes := map[string]bool{}
	for _, c := range calls {
		outcomes[c.outcome] = true
	}
	count := func(match func(attempt) bool) func(ts float64) (float64, bool) {
		return func(ts float64) (float64, bool) {
			n := 0.0
			for _, c := range calls {
				if c.t <= ts && match(c) {
					n++
				}
			}
			return n, o.isAlive(ts)
		}
	}
	for out := range outcomes {
		tl.add(scrapedLabels(metrics.NameKeycloakRequests, o.pod, "grant", "client_credentials", "endpoint", "token", "outcome", out),
			count(func(c attempt) bool { return c.outcome == out }))
	}
	for _, le := range []string{"0.1", "1", "5", "10", "15", "+Inf"} {
		tl.add(scrapedLabels(metrics.NameKeycloakDuration+"_bucket", o.pod, "grant", "client_credentials", "endpoint", "token", "le", le),
			count(func(attempt) bool { return true }))
	}
}

// firing is what promql-check alerts reports for one evaluation.
type firing struct {
	Time   float64 `json:"time"`
	Firing []struct {
		Alert       string            `json:"alert"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"firing"`
}

// names lists the firing alerts of one evaluation as "Alert[severity] key": key is
// namespace/name for per-token alerts, the kind and namespace/name (or name) for issuers, the endpoint or outcome for Keycloak and revocation
// alerts, job@namespace (or job) for alerts about the operator.
func (f firing) names() []string {
	var out []string
	for _, a := range f.Firing {
		l := a.Labels
		var id string
		switch {
		case l["kind"] != "" && l["namespace"] != "":
			id = l["kind"] + " " + l["namespace"] + "/" + l["name"]
		case l["kind"] != "":
			id = l["kind"] + " " + l["name"]
		case l["name"] != "":
			id = l["namespace"] + "/" + l["name"]
		case l["endpoint"] != "":
			id = l["endpoint"]
		case l["outcome"] != "":
			id = l["outcome"]
		case l["namespace"] != "":
			id = l["job"] + "@" + l["namespace"]
		default:
			id = l["job"]
		}
		out = append(out, fmt.Sprintf("%s[%s] %s", a.Alert, l["severity"], id))
	}
	sort.Strings(out)
	return out
}

// alertRule is a rule of rules.yaml as promql-check alerts takes it.
type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// alertRules returns the alerting rules of config/prometheus/rules.yaml.
func alertRules(t *testing.T) []alertRule {
	t.Helper()
	var rf ruleFile
	if err := yaml.Unmarshal(mustRead(t, "config/prometheus/rules.yaml"), &rf); err != nil {
		t.Fatal(err)
	}
	var out []alertRule
	for _, g := range rf.Spec.Groups {
		for _, r := range g.Rules {
			out = append(out, alertRule{Alert: r.Alert, Expr: r.Expr, For: r.For, Labels: r.Labels, Annotations: r.Annotations})
		}
	}
	return out
}

// evaluate runs Prometheus' alerting rules over the timeline, evaluating every evalInterval, and
// returns what fires at each evaluation. Annotations must expand without template errors.
func (tl *timeline) evaluate(t *testing.T) []firing {
	t.Helper()
	in, err := json.Marshal(map[string]any{"series": tl.series, "rules": alertRules(t),
		"start": tl.start, "end": tl.end, "interval": evalInterval})
	if err != nil {
		t.Fatal(err)
	}
	var out []firing
	if err := json.Unmarshal(run(t, in, tool(t, "promql-check"), "alerts"), &out); err != nil {
		t.Fatal(err)
	}
	for _, f := range out {
		for _, a := range f.Firing {
			for k, v := range a.Annotations {
				if strings.Contains(v, "error expanding template") {
					t.Errorf("%s annotation %s at %v: %s", a.Alert, k, f.Time, v)
				}
			}
		}
	}
	return out
}

// at returns the evaluation at time ts.
func at(t *testing.T, evals []firing, ts float64) firing {
	t.Helper()
	for _, f := range evals {
		if f.Time == ts {
			return f
		}
	}
	t.Fatalf("no evaluation at %v", ts)
	return firing{}
}

// firstFiring returns when the alert named by id ("Alert[severity] key") first fired, or NaN.
func firstFiring(evals []firing, id string) float64 {
	for _, f := range evals {
		for _, n := range f.names() {
			if n == id {
				return f.Time
			}
		}
	}
	return math.NaN()
}

// expectAt fails unless exactly want fires at ts.
func expectAt(t *testing.T, evals []firing, ts float64, want ...string) {
	t.Helper()
	got := at(t, evals, ts).names()
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("at %+.0fs, firing:\n  %s\nwant:\n  %s", ts-evals[len(evals)-1].Time, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// expectNothingFires fails at every evaluation where anything fires.
func expectNothingFires(t *testing.T, evals []firing) {
	t.Helper()
	for _, f := range evals {
		if n := f.names(); len(n) > 0 {
			t.Errorf("at %.0fs, firing: %v", f.Time-evals[0].Time, n)
		}
	}
}

// covered records which alerts some test proved to fire, for TestEveryAlertIsExercised.
var covered = map[string]bool{}

func cover(ids ...string) {
	for _, id := range ids {
		covered[strings.SplitN(id, "[", 2)[0]] = true
	}
}

// simIssuer is a KeycloakIssuer or ClusterKeycloakIssuer as the operator checks it: at created,
// then every issuerRecheck while Ready and every issuerRecheckFailing while not.
type simIssuer struct {
	kind, namespace, name string // namespace "" for a ClusterKeycloakIssuer
	created               float64
	// keycloakUp says whether its realm answers at t (nil: always).
	keycloakUp func(t float64) bool
	// misconfigured issuers fail every check (a wrong URL, a missing client secret).
	misconfigured bool
}

const (
	issuerRecheck        = 300.0 // --issuer-recheck-interval
	issuerRecheckFailing = 30.0  // a tenth of it, at least 30 s
)

// checks returns the issuer's checks until end: their times and whether each passed.
func (is simIssuer) checks(end float64) []stateChange {
	var out []stateChange
	for t := is.created; t <= end; {
		ok := !is.misconfigured && (is.keycloakUp == nil || is.keycloakUp(t))
		s := tokenState{}
		next := issuerRecheckFailing
		if ok {
			s.ready, next = 1, issuerRecheck
		}
		out = append(out, stateChange{t, s})
		t += next
	}
	return out
}

// notReadyFor returns how long in total the issuer was not Ready between from and to.
func (is simIssuer) notReadyFor(from, to float64) float64 {
	checks := is.checks(to)
	total := 0.0
	for i, c := range checks {
		until := to
		if i+1 < len(checks) {
			until = checks[i+1].t
		}
		if c.s.ready == 0 {
			total += math.Max(0, math.Min(until, to)-math.Max(c.t, from))
		}
	}
	return total
}

// addIssuers adds mlflow_token_issuer_ready as the leader exports it. A ClusterKeycloakIssuer's
// series is exported with namespace="", which Prometheus stores as no namespace label (with
// honorLabels the target's namespace does not replace a label the series has).
func (tl *timeline) addIssuers(leader operator, issuers ...simIssuer) {
	for _, is := range issuers {
		checks := is.checks(tl.end)
		lbl := scrapedLabels(metrics.NameIssuerReady, leader.pod, "kind", is.kind, "name", is.name, "namespace", is.namespace)
		if is.namespace == "" {
			delete(lbl, "namespace")
		}
		tl.add(lbl, func(ts float64) (float64, bool) {
			i := sort.Search(len(checks), func(i int) bool { return checks[i].t > ts })
			if i == 0 || !leader.isLeader(ts) {
				return 0, false
			}
			return checks[i-1].s.ready, true
		})
	}
}

// addNudges adds mlflow_token_pod_nudges_total as the leader exports it: at every new token of
// each token (its rotations and first issue), each of its consumer pods is nudged, with
// the outcomes outcome gives for that pod (two when the first failed transiently and was
// retried). It returns how many nudges failed.
func (tl *timeline) addNudges(leader operator, tokens []simToken, pods int, outcome func(t float64, token, pod int) []string) (failed int) {
	events := map[string][]float64{}
	for i, tk := range tokens {
		changes, _ := tk.simulate(tl.end)
		lastExpiry := math.Inf(-1)
		for _, c := range changes {
			if !c.s.issued || c.s.expiry == lastExpiry {
				continue // not a new token
			}
			lastExpiry = c.s.expiry
			for p := range pods {
				for _, o := range outcome(c.t, i, p) {
					events[o] = append(events[o], c.t)
					if o != "nudged" && o != "gone" {
						failed++
					}
				}
			}
		}
	}
	for o, ts := range events {
		tl.add(scrapedLabels(metrics.NamePodNudges, leader.pod, "outcome", o), func(t float64) (float64, bool) {
			return float64(countBefore(t, ts...)), leader.isAlive(t)
		})
	}
	return failed
}
