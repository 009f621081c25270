package packaging

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"text/template"
	"time"
	"unicode"

	"sigs.k8s.io/yaml"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
)

// knownMetrics are the series the operator exports (internal/metrics), histogram series included.
func knownMetrics() map[string]bool {
	m := map[string]bool{}
	for _, n := range []string{metrics.NameExpiry, metrics.NameRenewal, metrics.NameReady, metrics.NameFailedAttempts,
		metrics.NameKeycloakRequests, metrics.NameRevocations, metrics.NameSuperseded, chainExpiryMetric, metrics.NameMLflowAccepted,
		metrics.NameIssuerReady, metrics.NameSATokenRequests, metrics.NamePodNudges,
		metrics.NameCSIVolumes, metrics.NameCSIExpired, metrics.NameCSIIssuances, metrics.NameCSIFailures,
		metrics.NameCSIRevocations, metrics.NameCSINextRotation, metrics.NameCSIRegistered} {
		m[n] = true
	}
	for _, h := range histogramMetrics {
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			m[h+s] = true
		}
	}
	return m
}

// histogramMetrics are the operator's histograms: Prometheus stores each as _bucket, _sum and
// _count series.
var histogramMetrics = []string{metrics.NameKeycloakDuration, metrics.NamePodNudgeDelay, metrics.NameCSIDelivery, metrics.NameCSIMountDuration}

// TestKnownMetricsComplete: knownMetrics lists exactly the metric names internal/metrics
// defines, so that the dashboard check (every metric shown) and the rule checks cover a new
// metric too.
func TestKnownMetricsComplete(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "internal", "metrics", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		for _, m := range regexp.MustCompile(`"(mlflow_token_[a-z_]+)"`).FindAllStringSubmatch(string(mustRead(t, "internal/metrics/"+filepath.Base(f))), -1) {
			defined[m[1]] = true
		}
	}
	listed := map[string]bool{}
	for m := range knownMetrics() {
		for _, h := range histogramMetrics {
			if strings.HasPrefix(m, h+"_") {
				m = h
			}
		}
		listed[m] = true
	}
	for m := range defined {
		if !listed[m] {
			t.Errorf("internal/metrics defines %s, which knownMetrics (test/packaging/monitoring_test.go) lacks", m)
		}
	}
	for m := range listed {
		if !defined[m] {
			t.Errorf("knownMetrics lists %s, which internal/metrics does not define", m)
		}
	}
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

// operatorProcessMetrics are series about the operator process rather than tokens, which alerts
// may use besides the operator's own: Prometheus' `up` for its scrape target, and controller-
// runtime's leader election gauge (1 on the leader, 0 on standbys).
var operatorProcessMetrics = []string{"up", "leader_election_master_status"}

// checkExprs fails for expressions that do not parse or that name metrics the operator does not
// export (plus extra), and returns the metric names used.
func checkExprs(t *testing.T, where []string, exprs []string, extra ...string) map[string]bool {
	t.Helper()
	known := knownMetrics()
	for _, e := range extra {
		known[e] = true
	}
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

// runbookBase is where every alert's runbook_url points: a section of docs/alerts.md.
const runbookBase = "https://github.com/mlflow-token-operator/mlflow-token-operator/blob/main/docs/alerts.md#"

// TestPrometheusRules checks config/prometheus/rules.yaml: a PrometheusRule whose alerts all
// parse, use only the operator's metrics, carry a severity and summary/description annotations
// that are valid templates, and a runbook_url whose anchor is a section of docs/alerts.md; the
// alerts the operator's users need are there; the directory builds with kustomize.
func TestPrometheusRules(t *testing.T) {
	var rf ruleFile
	if err := yaml.UnmarshalStrict(mustRead(t, "config/prometheus/rules.yaml"), &rf, yaml.DisallowUnknownFields); err != nil {
		t.Fatalf("config/prometheus/rules.yaml: %v", err)
	}
	if rf.APIVersion != "monitoring.coreos.com/v1" || rf.Kind != "PrometheusRule" {
		t.Fatalf("want a monitoring.coreos.com/v1 PrometheusRule, got %s %s", rf.APIVersion, rf.Kind)
	}
	anchors := markdownAnchors(string(mustRead(t, "docs/alerts.md")))
	var exprs, where []string
	alerts := map[string]bool{}
	severities := map[string]bool{}
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
			// One alert may come in two severities (a warning first, then critical), as
			// kube-prometheus does; Alertmanager inhibits the warning while the critical fires.
			if severities[name+"/"+r.Labels["severity"]] {
				t.Errorf("alert %s is defined twice with severity %q", name, r.Labels["severity"])
			}
			severities[name+"/"+r.Labels["severity"]] = true
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
			if u := r.Annotations["runbook_url"]; !strings.HasPrefix(u, runbookBase) {
				t.Errorf("alert %s: runbook_url %q does not point at a section of docs/alerts.md (%s...)", name, u, runbookBase)
			} else if a := strings.TrimPrefix(u, runbookBase); !anchors[a] {
				t.Errorf("alert %s: runbook_url anchor #%s is not a heading of docs/alerts.md", name, a)
			} else if a != strings.ToLower(name) {
				t.Errorf("alert %s: runbook_url anchor #%s, want #%s (its own section)", name, a, strings.ToLower(name))
			}
			exprs = append(exprs, r.Expr)
			where = append(where, "alert "+name)
		}
	}
	for _, want := range []string{"MLflowTokenOperatorAbsent", "MLflowTokenOperatorNoLeader", "MLflowTokenExpiringWhileRenewalFails",
		"MLflowTokenNotReady", "MLflowTokenRenewalFailing", "MLflowTokenRenewalOverdue", "MLflowTokenRefreshChainExpiring",
		"MLflowTokenRevocationAbandoned", "MLflowTokenKeycloakErrors", "MLflowTokenIssuerNotReady", "MLflowTokenRejectedByMLflow",
		"MLflowTokenPodNudgesFailing"} {
		if !alerts[want] {
			t.Errorf("alert %s is missing", want)
		}
	}
	checkExprs(t, where, exprs, operatorProcessMetrics...)

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
		if strings.HasSuffix(m, "_count") || strings.HasSuffix(m, "_sum") { // a histogram's; its buckets must show
			continue
		}
		if !used[m] {
			t.Errorf("metric %s is exported but not shown on the dashboard", m)
		}
	}
}

// markdownAnchors returns the anchors GitHub gives the headings of a Markdown document:
// lower case, spaces to hyphens, punctuation other than hyphens and underscores dropped.
func markdownAnchors(doc string) map[string]bool {
	out := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		out[b.String()] = true
	}
	return out
}

type evalSeries struct {
	Labels  map[string]string `json:"labels"`
	Samples [][2]float64      `json:"samples"`
	StaleAt float64           `json:"stale_at,omitempty"`
}
