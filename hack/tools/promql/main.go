// Command promql-check parses PromQL expressions with Prometheus' own parser and lists the
// metric names each one selects, for test/packaging (alert rules and the Grafana dashboard).
// With the argument "eval" it loads series into a Prometheus TSDB and evaluates expressions with
// Prometheus' engine, so a test can check which series an alert fires for.
//
// Usage: promql-check < exprs.json   (a JSON array of strings)
// Prints a JSON array of {"expr": ..., "metrics": [...]} or {"expr": ..., "error": ...}.
//
// Usage: promql-check eval < scenario.json
// scenario: {"series": [{"labels": {"__name__": ..., ...}, "samples": [[unix_seconds, value], ...]}],
// "queries": [{"expr": ..., "time": unix_seconds}]}; a series may end with "stale_at": unix_seconds
// (a staleness marker, as when a target disappears).
// Prints a JSON array, per query, of {"result": [{"labels": {...}, "value": v}]} or {"error": ...}.
//
// Usage: promql-check alerts < scenario.json
// scenario: {"series": [...] as for eval, "rules": [{"alert": ..., "expr": ..., "for": "5m",
// "keep_firing_for": "", "labels": {...}, "annotations": {...}}], "start": unix_seconds,
// "end": unix_seconds, "interval": seconds}
// Evaluates every rule with Prometheus' own alerting rule (rules.AlertingRule: the pending and
// firing states, `for`, `keep_firing_for`, label and annotation templates) at each evaluation
// time from start to end, as Prometheus' rule manager would, and prints a JSON array, per
// evaluation time, of {"time": t, "firing": [{"alert": ..., "labels": {...}, "annotations": {...}}]}.
// A rule that fails to parse or evaluate makes the command fail.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/tsdb"
)

type result struct {
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "alerts" {
		if err := alerts(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 2 && os.Args[1] == "eval" {
		if err := eval(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "reading expressions:", err)
		os.Exit(1)
	}
	p := parser.NewParser(parser.Options{})
	out := make([]result, 0, len(exprs))
	for _, e := range exprs {
		r := result{Expr: e}
		expr, err := p.ParseExpr(e)
		if err != nil {
			r.Error = err.Error()
			out = append(out, r)
			continue
		}
		seen := map[string]bool{}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			if name == "" {
				r.Error = "selector without a metric name: " + vs.String()
			}
			seen[name] = true
			return nil
		})
		for n := range seen {
			r.Metrics = append(r.Metrics, n)
		}
		sort.Strings(r.Metrics)
		out = append(out, r)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

type scenario struct {
	Series  seriesList `json:"series"`
	Queries []struct {
		Expr string  `json:"expr"`
		Time float64 `json:"time"`
	} `json:"queries"`
}

type sample struct {
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

type evalResult struct {
	Result []sample `json:"result"`
	Error  string   `json:"error,omitempty"`
}

type seriesList []struct {
	Labels  map[string]string `json:"labels"`
	Samples [][2]float64      `json:"samples"`
	// StaleAt, when set, appends a staleness marker at that time, as Prometheus does when a
	// target or a series disappears from a scrape: the series then ends there instead of
	// lingering for the 5-minute lookback.
	StaleAt float64 `json:"stale_at,omitempty"`
}

// loadDB writes the series into a fresh TSDB in a temporary directory; close removes it.
func loadDB(series seriesList) (db *tsdb.DB, closeDB func(), err error) {
	dir, err := os.MkdirTemp("", "promql-eval")
	if err != nil {
		return nil, nil, err
	}
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = 0
	db, err = tsdb.Open(dir, nil, nil, opts, nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	closeDB = func() { db.Close(); os.RemoveAll(dir) }
	app := db.Appender(context.Background())
	for _, s := range series {
		lbls := labels.FromMap(s.Labels)
		for _, p := range s.Samples {
			if _, err := app.Append(0, lbls, int64(p[0]*1000), p[1]); err != nil {
				closeDB()
				return nil, nil, fmt.Errorf("appending %s: %w", lbls, err)
			}
		}
		if s.StaleAt != 0 {
			if _, err := app.Append(0, lbls, int64(s.StaleAt*1000), math.Float64frombits(value.StaleNaN)); err != nil {
				closeDB()
				return nil, nil, fmt.Errorf("appending the staleness marker of %s: %w", lbls, err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		closeDB()
		return nil, nil, err
	}
	return db, closeDB, nil
}

func newEngine() *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{MaxSamples: 10_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
}

func eval() error {
	var sc scenario
	if err := json.NewDecoder(os.Stdin).Decode(&sc); err != nil {
		return fmt.Errorf("reading the scenario: %w", err)
	}
	db, closeDB, err := loadDB(sc.Series)
	if err != nil {
		return err
	}
	defer closeDB()
	ctx := context.Background()
	engine := newEngine()
	out := make([]evalResult, 0, len(sc.Queries))
	for _, q := range sc.Queries {
		r := evalResult{Result: []sample{}}
		ts := time.Unix(0, int64(q.Time*1e9))
		query, err := engine.NewInstantQuery(ctx, db, nil, q.Expr, ts)
		if err != nil {
			r.Error = err.Error()
			out = append(out, r)
			continue
		}
		res := query.Exec(ctx)
		switch {
		case res.Err != nil:
			r.Error = res.Err.Error()
		default:
			vec, err := res.Vector()
			if err != nil {
				r.Error = err.Error()
				break
			}
			for _, s := range vec {
				r.Result = append(r.Result, sample{Labels: s.Metric.Map(), Value: s.F})
			}
		}
		query.Close()
		out = append(out, r)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

type alertScenario struct {
	Series seriesList `json:"series"`
	Rules  []struct {
		Alert         string            `json:"alert"`
		Expr          string            `json:"expr"`
		For           string            `json:"for"`
		KeepFiringFor string            `json:"keep_firing_for"`
		Labels        map[string]string `json:"labels"`
		Annotations   map[string]string `json:"annotations"`
	} `json:"rules"`
	Start    float64 `json:"start"`
	End      float64 `json:"end"`
	Interval float64 `json:"interval"`
}

type firingAlert struct {
	Alert       string            `json:"alert"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type evaluation struct {
	Time   float64       `json:"time"`
	Firing []firingAlert `json:"firing"`
}

func duration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := model.ParseDuration(s)
	return time.Duration(d), err
}

func alerts() error {
	var sc alertScenario
	if err := json.NewDecoder(os.Stdin).Decode(&sc); err != nil {
		return fmt.Errorf("reading the scenario: %w", err)
	}
	if sc.Interval <= 0 || sc.End < sc.Start {
		return fmt.Errorf("need interval > 0 and end >= start (got %v, %v..%v)", sc.Interval, sc.Start, sc.End)
	}
	db, closeDB, err := loadDB(sc.Series)
	if err != nil {
		return err
	}
	defer closeDB()
	query := rules.EngineQueryFunc(newEngine(), db)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	p := parser.NewParser(parser.Options{})
	var rs []*rules.AlertingRule
	for _, r := range sc.Rules {
		expr, err := p.ParseExpr(r.Expr)
		if err != nil {
			return fmt.Errorf("alert %s: %w", r.Alert, err)
		}
		hold, err := duration(r.For)
		if err != nil {
			return fmt.Errorf("alert %s: for: %w", r.Alert, err)
		}
		keep, err := duration(r.KeepFiringFor)
		if err != nil {
			return fmt.Errorf("alert %s: keep_firing_for: %w", r.Alert, err)
		}
		rs = append(rs, rules.NewAlertingRule(r.Alert, expr, hold, keep, labels.FromMap(r.Labels),
			labels.FromMap(r.Annotations), labels.EmptyLabels(), "", true, logger))
	}
	ctx := context.Background()
	var out []evaluation
	for t := sc.Start; t <= sc.End; t += sc.Interval {
		ts := time.Unix(0, int64(t*1e9))
		ev := evaluation{Time: t, Firing: []firingAlert{}}
		for _, r := range rs {
			if _, err := r.Eval(ctx, 0, ts, query, nil, 0); err != nil {
				return fmt.Errorf("alert %s at %v: %w", r.Name(), t, err)
			}
			for _, a := range r.ActiveAlerts() {
				if a.State != rules.StateFiring {
					continue
				}
				ev.Firing = append(ev.Firing, firingAlert{Alert: r.Name(), Labels: a.Labels.Map(), Annotations: a.Annotations.Map()})
			}
		}
		out = append(out, ev)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
