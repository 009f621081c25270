package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"time"
)

func f1(x float64) string { return fmt.Sprintf("%.1f", x) }
func f2(x float64) string { return fmt.Sprintf("%.2f", x) }
func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

func div(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func mark(ok bool) string {
	if ok {
		return "✅"
	}
	return "❌"
}

// headline picks the scaling burst nearest to 1,000 resources.
func (r *Report) headline() *BurstResult {
	var best *BurstResult
	for _, b := range r.Scaling {
		if b.Ready < b.N {
			continue
		}
		if best == nil || math.Abs(math.Log(float64(b.N)/1000)) < math.Abs(math.Log(float64(best.N)/1000)) {
			best = b
		}
	}
	return best
}

// rawAt is the raw Keycloak rate at a concurrency (NaN when not measured).
func (r *Report) rawAt(conc int) float64 {
	for _, k := range r.RawKC {
		if k.Concurrency == conc {
			return k.Rate
		}
	}
	return math.NaN()
}

func (r *Report) rawRate() float64 {
	if len(r.RawKC) == 0 {
		return math.NaN()
	}
	return r.RawKC[0].Rate
}

// apiRate is the raw unthrottled Secret update rate at the operator's concurrency.
func (r *Report) apiRate() float64 {
	for _, a := range r.RawAPI {
		if a.QPS <= 0 && len(r.RawKC) > 0 && a.Concurrency == r.RawKC[0].Concurrency {
			return a.Rate
		}
	}
	return math.NaN()
}

// composite is the issuance rate this machine could reach if its cores did nothing but the
// requests one issuance needs: one token from Keycloak plus the API requests the operator
// made per token in burst b (each costed like a raw Secret update), time-sharing the CPU.
func (r *Report) composite(b *BurstResult) float64 {
	perToken := (b.Delta.Writes + b.Delta.Gets) / float64(b.N)
	return 1 / (1/r.rawRate() + perToken/r.apiRate())
}

// rows is the summary table: figure, goal, measured, verdict.
func (r *Report) rows() [][4]string {
	var rows [][4]string
	add := func(a, b, c, d string) { rows = append(rows, [4]string{a, b, c, d}) }
	if len(r.RawKC) > 0 {
		k := r.RawKC[0]
		add(fmt.Sprintf("Raw Keycloak client-credentials issuance, concurrency %d", k.Concurrency), "the limit",
			fmt.Sprintf("%s tokens/s (p50 %s, p99 %s)", f1(k.Rate), ms(k.P50), ms(k.P99)), "")
	}
	for _, a := range r.RawAPI {
		q := "unthrottled client"
		if a.QPS > 0 {
			q = fmt.Sprintf("client QPS %v/burst %d", a.QPS, a.Burst)
		}
		add(fmt.Sprintf("Raw Secret updates, concurrency %d, %s", a.Concurrency, q), "the limit",
			fmt.Sprintf("%s updates/s (p50 %s)", f1(a.Rate), ms(a.P50)), "")
	}
	if b := r.headline(); b != nil {
		ratio := div(b.Rate, r.rawRate())
		ratio1090 := div(b.Rate1090, r.rawRate())
		add(fmt.Sprintf("Burst N=%d: first create → all Ready", b.N), "", fmt.Sprintf("%s (creating took %s)", ms(b.AllReady), ms(b.Created)), "")
		add("Operator issuance rate (N / time to all Ready)", "", fmt.Sprintf("%s tokens/s", f1(b.Rate)), "")
		add("**Ratio to the raw Keycloak rate**", "≥ 0.8", fmt.Sprintf("**%s** (10th–90th percentile of Ready times: %s)", f2(ratio), f2(ratio1090)), mark(ratio >= 0.8))
		comp := r.composite(b)
		add("Composite limit: Keycloak + the operator's API requests per token sharing the cores", "",
			fmt.Sprintf("%s tokens/s (1 token at %s/s + %.1f API requests at %s/s); operator / composite = %s",
				f1(comp), f1(r.rawRate()), (b.Delta.Writes+b.Delta.Gets)/float64(b.N), f1(r.apiRate()), f2(b.Rate/comp)), "")
		add("Machine CPU during the burst", "", fmt.Sprintf("%s of %d cores busy; %s", f2(b.Machine), r.Cores, b.Cores), "")
		add("create → Ready p50 / p99", "", fmt.Sprintf("%s / %s", ms(b.P50), ms(b.P99)), "")
		add("Keycloak requests in the burst", fmt.Sprintf("%d", b.N), fmt.Sprintf("%.0f", b.Delta.KC), mark(int(b.Delta.KC) == b.N))
	}
	if s := r.Steady; s != nil {
		kc := div(s.Delta.KC, float64(s.Rotations))
		wr := div(s.Delta.Writes, float64(s.Rotations))
		add(fmt.Sprintf("Steady state N=%d, 30 s tokens, %s: rotations", s.N, s.Duration.Round(time.Second)), "",
			fmt.Sprintf("%d (%s/s)", s.Rotations, f1(float64(s.Rotations)/s.Duration.Seconds())), "")
		add("Keycloak requests per rotation", "1.0", f2(kc), mark(kc <= 1.01))
		add("API writes per rotation (PUT+PATCH+POST)", "≤ 2", fmt.Sprintf("%s (PUT %s, POST %s, PATCH %s)", f2(wr),
			f2(div(s.Delta.Puts, float64(s.Rotations))), f2(div(s.Delta.Posts, float64(s.Rotations))), f2(div(s.Delta.Patches, float64(s.Rotations)))), mark(wr <= 2.0))
		add("API reads per rotation (GET)", "", f2(div(s.Delta.Gets, float64(s.Rotations))), "")
		add("Tokens that expired before being rotated (steady state)", "0", fmt.Sprintf("%d", s.Expired), mark(s.Expired == 0))
		add(fmt.Sprintf("… in the %s between the burst and the steady state (first renewals queued behind the burst's issuances)", s.Settle), "0",
			fmt.Sprintf("%d", s.TransitionExpired), mark(s.TransitionExpired == 0))
		add("Operator CPU seconds per 1,000 rotations", "", f2(div(s.Delta.CPU*1000, float64(s.Rotations))), "")
	}
	rows = append(rows, r.secretlessRows()...)
	if rr := r.Restart; rr != nil {
		add(fmt.Sprintf("Restart with %d valid tokens: Keycloak requests in the first %s", rr.N, rr.Window), "= renewals due",
			fmt.Sprintf("%.0f requests, %d due (%d of them already due at start); first 10 s: %.0f requests, %d due; premature rotations %d",
				rr.Requests, rr.Due, rr.DueAtStart, rr.Requests10s, rr.Due10s, rr.Premature),
			mark(rr.Premature == 0 && rr.Requests <= float64(rr.Due)+1))
	}
	if b := r.SteadyBurst; b != nil {
		add(fmt.Sprintf("Spread after the burst of %d 30 s tokens: most renewals in one second", b.N), "",
			fmt.Sprintf("%d (issued over %s; jitter ≤ 3 s)", b.MaxPerSec, ms(b.AllReady)), "")
	}
	if b := r.headline(); b != nil {
		add(fmt.Sprintf("Spread after the burst of %d five-minute tokens: most renewals in one second", b.N), "",
			fmt.Sprintf("%d (issued over %s; jitter ≤ 30 s)", b.MaxPerSec, ms(b.AllReady)), "")
		g := div(float64(b.RSSUnrel-b.RSS), float64(b.RSS)) * 100
		add(fmt.Sprintf("Operator RSS with %d resources → after %d unrelated 4 KiB Secrets", b.N, b.Unrelated), "growth < 10%",
			fmt.Sprintf("%s → %s (%+.1f%%); Go heap in use %s → %s", mib(b.RSS), mib(b.RSSUnrel), g, mib(int64(b.HeapInUse)), mib(int64(b.HeapUnrel))), mark(g < 10))
	}
	if b := r.Compare; b != nil && b.Ready == b.N {
		add(fmt.Sprintf("Burst N=%d, raised limits, --concurrency=%d: all Ready", b.N, b.Flags.Concurrency), "",
			fmt.Sprintf("%s (%s tokens/s; ratio to raw Keycloak at concurrency %d: %s)", ms(b.AllReady), f1(b.Rate), b.Flags.Concurrency, f2(div(b.Rate, r.rawAt(b.Flags.Concurrency)))), "")
	}
	if b := r.Defaults; b != nil && b.Ready == b.N {
		add(fmt.Sprintf("Burst N=%d with the default flags: all Ready", b.N), "",
			fmt.Sprintf("%s (%s tokens/s; ratio to raw Keycloak at concurrency 4: %s)", ms(b.AllReady), f1(b.Rate), f2(div(b.Rate, r.rawAt(4)))), "")
	}
	return rows
}

func (r *Report) table() string {
	var sb strings.Builder
	sb.WriteString("| figure | goal | measured | |\n|---|---|---|---|\n")
	for _, row := range r.rows() {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s |\n", row[0], row[1], row[2], row[3])
	}
	return sb.String()
}

func (r *Report) write(c Config) error {
	var plots []string
	rel := func(p string) string {
		rp, err := filepath.Rel(filepath.Dir(c.Out), p)
		if err != nil {
			return p
		}
		return rp
	}
	var steadyPNG, restartPNG string
	var scalingPNG []string
	var spreadBursts []*BurstResult
	if r.SteadyBurst != nil {
		spreadBursts = append(spreadBursts, r.SteadyBurst)
	}
	if b := r.headline(); b != nil {
		spreadBursts = append(spreadBursts, b)
	}
	var spreadPNGs []string
	for i, b := range spreadBursts {
		name := "spread-5m.png"
		if b.Lifespan < time.Minute {
			name = "spread-30s.png"
		}
		if p, err := plotSpread(c.PNGDir, name, fmt.Sprintf("Renewals due per second after a burst of %d (renew-at annotations)", b.N), spreadBursts[i:i+1]); err == nil {
			spreadPNGs = append(spreadPNGs, rel(p))
			plots = append(plots, p)
		} else {
			logf("plot: %v", err)
		}
	}
	var complete []*BurstResult
	for _, b := range r.Scaling {
		if b.Ready == b.N && b.RSS > 0 {
			complete = append(complete, b)
		}
	}
	if len(complete) > 0 {
		if ps, err := plotScaling(c.PNGDir, complete); err == nil {
			for _, p := range ps {
				scalingPNG = append(scalingPNG, rel(p))
			}
			plots = append(plots, ps...)
		} else {
			logf("plot: %v", err)
		}
	}
	if r.Steady != nil {
		if p, err := plotSteady(c.PNGDir, r.Steady); err == nil {
			steadyPNG = rel(p)
			plots = append(plots, p)
		}
	}
	if r.Restart != nil {
		if p, err := plotRestart(c.PNGDir, r.Restart); err == nil {
			restartPNG = rel(p)
			plots = append(plots, p)
		}
	}

	var sb strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&sb, format, a...) }
	w("# Benchmarks\n\n")
	w("Measured by `make bench` (`test/bench`, issue 7) on %s, %d cores (`nproc`), %s RAM, Go %s. "+
		"Run from %s to %s UTC (%s). Everything runs on this one machine and shares its %d cores: "+
		"Keycloak 26.7.3 (a JVM, full JIT, H2 dev-file database), etcd and kube-apiserver (envtest), "+
		"the operator binary (`go build ./cmd`, a separate process whose RSS and CPU are read from `/proc/<pid>` and whose `/metrics` is scraped) "+
		"and the harness itself (load generators, informers).\n\n",
		r.CPUModel, r.Cores, r.MemTotal, strings.TrimPrefix(runtimeVersion(), "go"), r.Start.UTC().Format("2006-01-02 15:04"), r.End.UTC().Format("15:04"),
		r.End.Sub(r.Start).Round(time.Second), r.Cores)
	if c.Smoke {
		w("**This is a smoke run** (`make bench-smoke`): small N and short phases; the figures check the harness, not the operator.\n\n")
	}
	if c.Notes != "" {
		w("%s\n\n", c.Notes)
	}
	w("Raised-limit runs use `%s`; the default-flag run passes no tuning flags (%s).\n\n", c.Flags, OperatorFlags{Defaults: true})
	w("## Summary\n\n%s\n", r.table())
	if len(r.Skipped) > 0 {
		w("Skipped in this run (past the time budget): %s.\n\n", strings.Join(r.Skipped, "; "))
	}
	if len(r.Errors) > 0 {
		w("Errors during the run:\n\n")
		for _, e := range r.Errors {
			w("- %s\n", e)
		}
		w("\n")
	}
	if b, err := os.ReadFile(filepath.Join(c.Root, "test", "bench", "analysis.md")); err == nil && !c.Smoke {
		w("%s\n", strings.TrimSpace(string(b)))
		w("\n")
	}

	w("## 1. The limit\n\n")
	w("A Go load generator asks Keycloak for client-credentials tokens (form-encoded secret, keep-alive connections) with as many workers as the operator's `--concurrency`, after a warm-up for Keycloak's JIT; then further concurrencies. ")
	w("The API server's limit: workers updating Secrets shaped like the operator's (1.3 KiB token, annotations) with client-go, through a client with the operator's QPS settings, client-go-style 50/100, and unthrottled.\n\n")
	w("| load | concurrency | rate /s | p50 | p99 | errors | CPU cores used (per process) | machine busy (cores) |\n|---|---|---|---|---|---|---|---|\n")
	for _, k := range r.RawKC {
		w("| Keycloak tokens | %d | %s | %s | %s | %d | %s | %s |\n", k.Concurrency, f1(k.Rate), ms(k.P50), ms(k.P99), k.Errors, k.Cores, f2(k.Machine))
	}
	for _, a := range r.RawAPI {
		q := "unthrottled"
		if a.QPS > 0 {
			q = fmt.Sprintf("QPS %v/%d", a.QPS, a.Burst)
		}
		w("| Secret updates, %s | %d | %s | %s | %s | %d | %s | %s |\n", q, a.Concurrency, f1(a.Rate), ms(a.P50), ms(a.P99), a.Errors, a.Cores, f2(a.Machine))
	}
	w("\n## 2. Bursts and the scaling curve (steps 2, 6, 7)\n\n")
	w("N resources (all sharing one client-secret Secret, five-minute tokens) are created at once by 16 parallel clients while the operator runs; "+
		"a watch stamps each resource when it turns Ready. Time to all Ready runs from the first create to the last Ready; "+
		"the 10–90%% rate is 80%% of N over the time between the 10th and the 90th percentile Ready. "+
		"Memory: median of three RSS reads after the burst settled, then again after %d unrelated 4 KiB Secrets (no operator label) were added to the operator's namespace.\n\n", c.Unrelated)
	w("| run | N | create all | all Ready | tokens/s | 10–90%% /s | ratio to raw | p50 | p99 | Keycloak req. | API writes | operator CPU s | CPU cores during the burst | RSS | RSS +unrelated | heap | heap +unrelated |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	all := append(append([]*BurstResult{}, r.Scaling...), r.SteadyBurst, r.Compare, r.Defaults)
	if r.Secretless != nil {
		all = append(all, r.Secretless.Burst)
	}
	for _, b := range all {
		if b == nil {
			continue
		}
		rss, rssU, h, hU := "", "", "", ""
		if b.RSS > 0 {
			rss, h = mib(b.RSS), mib(int64(b.HeapInUse))
		}
		if b.RSSUnrel > 0 {
			rssU = fmt.Sprintf("%s (%+.1f%%)", mib(b.RSSUnrel), div(float64(b.RSSUnrel-b.RSS), float64(b.RSS))*100)
			hU = mib(int64(b.HeapUnrel))
		}
		w("| %s, %s tokens | %d | %s | %s | %s | %s | %s | %s | %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s |\n",
			b.Label, b.Lifespan, b.N, ms(b.Created), ms(b.AllReady), f1(b.Rate), f1(b.Rate1090), f2(div(b.Rate, r.rawRate())),
			ms(b.P50), ms(b.P99), b.Delta.KC, b.Delta.Writes, f2(b.Delta.CPU), b.Cores, rss, rssU, h, hU)
	}
	w("\n")
	w("Where a burst's time goes (operator metrics: reconciles, Keycloak latency, queue wait; the API server's own `apiserver_request_duration_seconds` per request kind, which excludes the client's waiting):\n\n")
	for _, b := range all {
		if b == nil {
			continue
		}
		w("- %s (N=%d): %s; %.0f answers 409; machine busy %s cores. API server: %s.\n", b.Label, b.N, b.Delta.Latencies(), b.Delta.Conflicts, f2(b.Machine), b.API)
	}
	w("\n")
	for _, p := range scalingPNG {
		w("![%s](%s)\n\n", strings.TrimSuffix(filepath.Base(p), ".png"), p)
	}
	w("## 3. Steady state (30 s tokens)\n\n")
	if s := r.Steady; s != nil {
		w("%d resources with 30 s tokens for %s, counted from %s after their burst (%d tokens expired in that transition). Rotations: the sum of `status.rotations` deltas; "+
			"Keycloak requests: `%s{endpoint=\"token\"}` (the issuers' discovery requests, one per issuer every 5 minutes, are not counted); API writes: `rest_client_requests_total{method=~\"PUT|PATCH|POST\"}` (POSTs: new Event objects; scheduled renewals fold into one `Renewed` series per resource: its first event is a POST, its second a PATCH that starts the series, then the events library writes the count every 30 min, so a short window shows up to 2 writes per resource on top); "+
			"CPU: `/proc/<pid>/stat` of the operator. A watch on the token Secrets flags any token whose expiry passed before its successor was written.\n\n",
			s.N, s.Duration.Round(time.Second), s.Settle, s.TransitionExpired, metricKCRequests)
		w("| rotations | rotations/s | Keycloak req. | failed req. | per rotation | PUT | POST | PATCH | (409s) | writes/rotation | GET/rotation | reconciles | expired | operator CPU s | CPU s / 1,000 rotations | CPU cores (per process) | machine busy |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		rot := float64(s.Rotations)
		w("| %d | %s | %.0f | %.0f | %s | %.0f | %.0f | %.0f | %.0f | %s | %s | %.0f | %d | %s | %s | %s | %s |\n\n",
			s.Rotations, f1(rot/s.Duration.Seconds()), s.Delta.KC, s.Delta.KCFailed, f2(div(s.Delta.KC, rot)), s.Delta.Puts, s.Delta.Posts, s.Delta.Patches, s.Delta.Conflicts,
			f2(div(s.Delta.Writes, rot)), f2(div(s.Delta.Gets, rot)), s.Delta.Reconciles, s.Expired, f1(s.Delta.CPU), f2(div(s.Delta.CPU*1000, rot)), s.Cores, f2(s.Machine))
		w("Operator: %s. API server: %s.\n\n", s.Delta.Latencies(), s.API)
		if steadyPNG != "" {
			w("![steady](%s)\n\n", steadyPNG)
		}
	} else {
		w("Not measured in this run.\n\n")
	}
	sb.WriteString(r.secretlessSection())
	w("## 4. Restart\n\n")
	if rr := r.Restart; rr != nil {
		w("After the steady state the operator got SIGTERM and a new process started at once (down for %s) with %d valid tokens. "+
			"Renewals due: every renew-at annotation (of the Secrets as the old process left them, and of each token the new process wrote) that falls before the end of the window; "+
			"a rotation is premature when the token it replaced was not due yet (1 s tolerance for the whole-second annotations).\n\n", ms(rr.DownFor), rr.N)
		w("| window | Keycloak requests | renewals due | of which due before the start | first 10 s: requests / due | rotations seen | premature |\n|---|---|---|---|---|---|---|\n")
		w("| %s | %.0f | %d | %d | %.0f / %d | %d | %d |\n\n", rr.Window, rr.Requests, rr.Due, rr.DueAtStart, rr.Requests10s, rr.Due10s, rr.Rotations, rr.Premature)
		if restartPNG != "" {
			w("![restart](%s)\n\n", restartPNG)
		}
	} else {
		w("Not measured in this run.\n\n")
	}
	w("## 5. Spread\n\n")
	if len(spreadPNGs) > 0 {
		w("Renewals due per second, from the Secrets' renew-at annotations right after each burst. The jitter is up to 10%% of the lifetime (3 s for 30 s tokens, 30 s for five-minute tokens).\n\n")
		for _, b := range spreadBursts {
			w("- %s: N=%d, %s tokens, issued over %s: at most **%d** renewals in one second, spread over %d s.\n", b.Label, b.N, b.Lifespan, ms(b.AllReady), b.MaxPerSec, len(b.RenewHist))
		}
		w("\n")
		for _, p := range spreadPNGs {
			w("![spread](%s)\n\n", p)
		}
	}
	w("## Reproducing\n\n```sh\nmake bench         # full run; rewrites docs/benchmarks.md and docs/benchmarks/*.png\nmake bench-smoke   # N=50, one-minute steady states; writes bin/bench-smoke/\n" +
		"# knobs: go -C test/bench run . -h (e.g. BENCH_ARGS='-sizes=100,1000,2000 -steady=10m';\n" +
		"# the secretless phase: -secretless=false, -secretless-n, -secretless-steady, -secretless-sa-lifetime)\n```\n")
	if err := os.MkdirAll(filepath.Dir(c.Out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(c.Out, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	fmt.Println()
	fmt.Println(r.table())
	logf("wrote %s and %d plots in %s", c.Out, len(plots), c.PNGDir)
	return nil
}

func runtimeVersion() string { return goruntime.Version() }
