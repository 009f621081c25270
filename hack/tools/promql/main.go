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
// "queries": [{"expr": ..., "time": unix_seconds}]}
// Prints a JSON array, per query, of {"result": [{"labels": {...}, "value": v}]} or {"error": ...}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/tsdb"
)

type result struct {
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func main() {
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
	Series []struct {
		Labels  map[string]string `json:"labels"`
		Samples [][2]float64      `json:"samples"`
	} `json:"series"`
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

func eval() error {
	var sc scenario
	if err := json.NewDecoder(os.Stdin).Decode(&sc); err != nil {
		return fmt.Errorf("reading the scenario: %w", err)
	}
	dir, err := os.MkdirTemp("", "promql-eval")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = 0
	db, err := tsdb.Open(dir, nil, nil, opts, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()
	app := db.Appender(ctx)
	for _, s := range sc.Series {
		lbls := labels.FromMap(s.Labels)
		for _, p := range s.Samples {
			if _, err := app.Append(0, lbls, int64(p[0]*1000), p[1]); err != nil {
				return fmt.Errorf("appending %s: %w", lbls, err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		return err
	}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 10_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
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
