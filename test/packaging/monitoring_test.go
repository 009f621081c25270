package packaging

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"text/template"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
)

// knownMetrics are the series the operator exports (internal/metrics), histogram series included.
func knownMetrics() map[string]bool {
	m := map[string]bool{}
	for _, n := range []string{metrics.NameExpiry, metrics.NameRenewal, metrics.NameReady, metrics.NameFailedAttempts,
		metrics.NameKeycloakRequests, metrics.NameRevocations} {
		m[n] = true
	}
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		m[metrics.NameKeycloakDuration+s] = true
	}
	return m
}

type promqlResult struct {
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics"`
	Error   string   `json:"error"`
}

// parsePromQL parses expressions with Prometheus' own parser (bin/tools/promql-check) and
// returns the metric names each selects.
func parsePromQL(t *testing.T, exprs []string) []promqlResult {
	t.Helper()
	in, _ := json.Marshal(exprs)
	var out []promqlResult
	if err := json.Unmarshal(run(t, in, tool(t, "promql-check")), &out); err != nil {
		t.Fatal(err)
	}
	if len(out) != len(exprs) {
		t.Fatalf("promql-check answered %d results for %d expressions", len(out), len(exprs))
	}
	return out
}

// checkExprs fails for expressions that do not parse or that name metrics the operator does not
// export, and returns the metric names used.
func checkExprs(t *testing.T, where []string, exprs []string) map[string]bool {
	t.Helper()
	known := knownMetrics()
	used := map[string]bool{}
	for i, r := range parsePromQL(t, exprs) {
		if r.Error != "" {
			t.Errorf("%s: PromQL does not parse: %s\n%s", where[i], r.Error, r.Expr)
			continue
		}
		if len(r.Metrics) == 0 {
			t.Errorf("%s: the expression selects no metric: %s", where[i], r.Expr)
		}
		for _, m := range r.Metrics {
			used[m] = true
			if !known[m] {
				t.Errorf("%s: metric %q is not exported by the operator (internal/metrics)", where[i], m)
			}
		}
	}
	return used
}

type ruleFile struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Record      string            `json:"record"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// Prometheus' template functions, as stubs: annotation templates must parse with them.
var promTemplateFuncs = template.FuncMap{}

func init() {
	for _, f := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp",
		"toTime", "title", "toUpper", "toLower", "match", "reReplaceAll", "graphLink", "tableLink", "query", "first",
		"label", "value", "strvalue", "sortByLabel", "args", "safeHtml", "externalURL", "pathPrefix", "stripPort", "stripDomain", "parseDuration"} {
		promTemplateFuncs[f] = func(...any) any { return nil }
	}
}

// TestPrometheusRules checks config/prometheus/rules.yaml: a PrometheusRule whose alerts all
// parse, use only the operator's metrics, carry a severity and summary/description annotations
// that are valid templates, and are explained in docs/troubleshooting.md; the alerts the
// operator's users need are there; the directory builds with kustomize.
func TestPrometheusRules(t *testing.T) {
	var rf ruleFile
	if err := yaml.UnmarshalStrict(mustRead(t, "config/prometheus/rules.yaml"), &rf, yaml.DisallowUnknownFields); err != nil {
		t.Fatalf("config/prometheus/rules.yaml: %v", err)
	}
	if rf.APIVersion != "monitoring.coreos.com/v1" || rf.Kind != "PrometheusRule" {
		t.Fatalf("want a monitoring.coreos.com/v1 PrometheusRule, got %s %s", rf.APIVersion, rf.Kind)
	}
	troubleshooting := string(mustRead(t, "docs/troubleshooting.md"))
	var exprs, where []string
	alerts := map[string]bool{}
	for _, g := range rf.Spec.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q is unnamed or empty", g.Name)
		}
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				t.Errorf("group %s: a rule without an alert name (record %q)", g.Name, r.Record)
				continue
			}
			if alerts[name] {
				t.Errorf("alert %s is defined twice", name)
			}
			alerts[name] = true
			if !regexp.MustCompile(`^MLflowToken[A-Z][A-Za-z]+$`).MatchString(name) {
				t.Errorf("alert %s: names start with MLflowToken and are CamelCase", name)
			}
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("alert %s: severity label %q, want critical, warning or info", name, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description"} {
				text := r.Annotations[a]
				if strings.TrimSpace(text) == "" {
					t.Errorf("alert %s: annotation %s is missing", name, a)
					continue
				}
				// Prometheus prepends variable definitions to annotation templates.
				if _, err := template.New(name).Funcs(promTemplateFuncs).Option("missingkey=zero").
					Parse("{{$labels := .Labels}}{{$value := .Value}}" + text); err != nil {
					t.Errorf("alert %s: annotation %s is not a valid template: %v", name, a, err)
				}
			}
			if r.For != "" {
				if d, err := time.ParseDuration(r.For); err != nil || d < 0 {
					t.Errorf("alert %s: for %q is not a duration", name, r.For)
				}
			}
			if !strings.Contains(troubleshooting, name) {
				t.Errorf("alert %s is not explained in docs/troubleshooting.md", name)
			}
			exprs = append(exprs, r.Expr)
			where = append(where, "alert "+name)
		}
	}
	for _, want := range []string{"MLflowTokenExpiringWhileRenewalFails", "MLflowTokenNotReady", "MLflowTokenRenewalFailing",
		"MLflowTokenRevocationAbandoned", "MLflowTokenKeycloakErrors"} {
		if !alerts[want] {
			t.Errorf("alert %s is missing", want)
		}
	}
	checkExprs(t, where, exprs)

	objs := decodeObjects(t, run(t, nil, tool(t, "kustomize"), "build", "config/prometheus"))
	kinds := []string{}
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
	}
	sort.Strings(kinds)
	if strings.Join(kinds, ",") != "PrometheusRule,ServiceMonitor" {
		t.Errorf("config/prometheus renders %v, want a PrometheusRule and a ServiceMonitor", kinds)
	}
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// grafanaVars replaces Grafana's variables by values PromQL accepts: range variables by a
// duration, template variables by a regex.
var grafanaRange = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)
var grafanaVar = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)

func substituteGrafanaVars(expr string) string {
	return grafanaVar.ReplaceAllString(grafanaRange.ReplaceAllString(expr, "5m"), ".*")
}

// TestGrafanaDashboard checks config/grafana/mlflow-token-operator.json: valid JSON with a uid,
// a Prometheus data source variable that every panel uses, titled panels with queries that parse
// (Grafana variables substituted) and use only the operator's metrics, and every metric of
// internal/metrics shown somewhere.
func TestGrafanaDashboard(t *testing.T) {
	var d dashboard
	if err := json.Unmarshal(mustRead(t, "config/grafana/mlflow-token-operator.json"), &d); err != nil {
		t.Fatalf("config/grafana/mlflow-token-operator.json: %v", err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("the dashboard needs a uid, a title and a schemaVersion (got %q, %q, %d)", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Error("the dashboard needs a `datasource` variable of type datasource")
	}
	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	ids := map[int]bool{}
	var exprs, where []string
	queries := 0
	for _, p := range all {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no gridPos", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource must be the Prometheus variable ${datasource}, got %+v", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target refId %q is empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			exprs = append(exprs, substituteGrafanaVars(tg.Expr))
			where = append(where, fmt.Sprintf("panel %q target %s", p.Title, tg.RefID))
			queries++
		}
	}
	if queries == 0 {
		t.Fatal("the dashboard has no queries")
	}
	used := checkExprs(t, where, exprs)
	for m := range knownMetrics() {
		if m == metrics.NameKeycloakDuration+"_count" || m == metrics.NameKeycloakDuration+"_sum" {
			continue
		}
		if !used[m] {
			t.Errorf("metric %s is exported but not shown on the dashboard", m)
		}
	}
}

// alertExprs returns the alert expressions of config/prometheus/rules.yaml by alert name.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	var rf ruleFile
	if err := yaml.Unmarshal(mustRead(t, "config/prometheus/rules.yaml"), &rf); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range rf.Spec.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

type evalSeries struct {
	Labels  map[string]string `json:"labels"`
	Samples [][2]float64      `json:"samples"`
}

// TestPrometheusAlertsFire evaluates each alert's expression with Prometheus' engine over half an
// hour of scrapes (every 30 s) of a fleet of tokens in different situations, and checks that it
// selects exactly the tokens it is meant for: a routine, healthy token fires nothing.
func TestPrometheusAlertsFire(t *testing.T) {
	const now = 1_800_000_000.0
	var series []evalSeries
	// gauge adds a constant gauge; counter one that grows by perMinute.
	add := func(value func(ts float64) float64, labels ...string) {
		m := map[string]string{"__name__": labels[0]}
		for i := 1; i+1 < len(labels); i += 2 {
			m[labels[i]] = labels[i+1]
		}
		s := evalSeries{Labels: m}
		for ts := now - 1800; ts <= now; ts += 30 {
			s.Samples = append(s.Samples, [2]float64{ts, value(ts)})
		}
		series = append(series, s)
	}
	constant := func(v float64) func(float64) float64 { return func(float64) float64 { return v } }
	perMinute := func(rate float64) func(float64) float64 {
		return func(ts float64) float64 { return (ts - (now - 1800)) / 60 * rate }
	}
	// Per-token gauges, as internal/metrics publishes them.
	token := func(name string, expiresIn, renewalIn, ready, failed float64) {
		add(constant(now+expiresIn), metrics.NameExpiry, "namespace", "team-a", "name", name)
		add(constant(now+renewalIn), metrics.NameRenewal, "namespace", "team-a", "name", name)
		add(constant(ready), metrics.NameReady, "namespace", "team-a", "name", name)
		add(constant(failed), metrics.NameFailedAttempts, "namespace", "team-a", "name", name)
	}
	token("healthy", 200, 100, 1, 0)              // renews in 100 s, nothing wrong
	token("failing-near-expiry", 90, 10, 1, 2)    // two failures, token gone in 90 s
	token("failing-far", 250, 20, 1, 3)           // three failures, still plenty of time
	token("expired", -60, 20, 0, 5)               // no valid token any more
	token("stuck", 100, -600, 1, 0)               // renewal was due 10 minutes ago
	token("new", 300, 200, 1, 0)                  // just issued
	token("failed-once-recovering", 150, 4, 1, 1) // one blip, retry in 4 s

	// Keycloak calls: the token endpoint fails a third of the time (unreachable), plus
	// configuration errors that must not count as Keycloak's fault; revocation is fine.
	add(perMinute(10), metrics.NameKeycloakRequests, "grant", "client_credentials", "endpoint", "token", "outcome", "success")
	add(perMinute(5), metrics.NameKeycloakRequests, "grant", "client_credentials", "endpoint", "token", "outcome", "KeycloakUnreachable")
	add(perMinute(50), metrics.NameKeycloakRequests, "grant", "client_credentials", "endpoint", "revoke", "outcome", "success")
	add(perMinute(20), metrics.NameKeycloakRequests, "grant", "client_credentials", "endpoint", "revoke", "outcome", "InvalidClientCredentials")
	// Latency: token calls take 5-10 s, revocations under 100 ms.
	for _, le := range []string{"0.1", "1", "5", "10", "15", "+Inf"} {
		tokenCount, revokeCount := 0.0, 55.0
		if le == "10" || le == "15" || le == "+Inf" {
			tokenCount = 15
		}
		add(perMinute(tokenCount), metrics.NameKeycloakDuration+"_bucket", "grant", "client_credentials", "endpoint", "token", "le", le)
		add(perMinute(revokeCount), metrics.NameKeycloakDuration+"_bucket", "grant", "client_credentials", "endpoint", "revoke", "le", le)
	}
	// Revocations: one abandoned and a few failed attempts in the last 15 minutes, many revoked.
	add(func(ts float64) float64 {
		if ts >= now-300 {
			return 1
		}
		return 0
	}, metrics.NameRevocations, "outcome", "abandoned")
	add(func(ts float64) float64 {
		if ts >= now-600 {
			return 3
		}
		return 0
	}, metrics.NameRevocations, "outcome", "failed")
	add(perMinute(2), metrics.NameRevocations, "outcome", "revoked")

	exprs := alertExprs(t)
	cases := []struct {
		alert, label string
		want         []string
	}{
		{"MLflowTokenExpiringWhileRenewalFails", "name", []string{"failing-near-expiry"}},
		{"MLflowTokenNotReady", "name", []string{"expired"}},
		{"MLflowTokenRenewalFailing", "name", []string{"expired", "failing-far"}},
		{"MLflowTokenRenewalOverdue", "name", []string{"stuck"}},
		{"MLflowTokenRevocationAbandoned", "outcome", []string{"abandoned"}},
		{"MLflowTokenRevocationFailing", "outcome", []string{"failed"}},
		{"MLflowTokenKeycloakErrors", "endpoint", []string{"token"}},
		{"MLflowTokenKeycloakSlow", "endpoint", []string{"token"}},
	}
	type query struct {
		Expr string  `json:"expr"`
		Time float64 `json:"time"`
	}
	var queries []query
	for _, c := range cases {
		e, ok := exprs[c.alert]
		if !ok {
			t.Fatalf("alert %s is not in config/prometheus/rules.yaml", c.alert)
		}
		queries = append(queries, query{e, now})
	}
	if len(cases) != len(exprs) {
		t.Errorf("%d alerts in rules.yaml, %d covered here: add a case for each new alert", len(exprs), len(cases))
	}
	in, _ := json.Marshal(map[string]any{"series": series, "queries": queries})
	var out []struct {
		Result []struct {
			Labels map[string]string `json:"labels"`
		} `json:"result"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(run(t, in, tool(t, "promql-check"), "eval"), &out); err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		if out[i].Error != "" {
			t.Errorf("%s: evaluation failed: %s", c.alert, out[i].Error)
			continue
		}
		var got []string
		for _, r := range out[i].Result {
			got = append(got, r.Labels[c.label])
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s fires for %s=%v, want %v", c.alert, c.label, got, c.want)
		}
	}
}
