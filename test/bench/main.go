// Command bench measures the operator against the physical limits of this machine: the real
// kube-apiserver (envtest) and a real Keycloak, the operator binary as a separate process. It
// prints a table and writes docs/benchmarks.md and PNG plots (issue 7).
//
//	make bench         # the full run (≈30 min)
//	make bench-smoke   # small and quick; writes into bin/bench-smoke/
//
// Needs KUBEBUILDER_ASSETS (bin/k8s) and KEYCLOAK_HOME (bin/keycloak-26.7.3).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

type Config struct {
	Root               string
	Out                string
	PNGDir             string
	Sizes              []int
	SteadyN            int
	Steady             time.Duration
	RestartWindow      time.Duration
	Settle             time.Duration
	Unrelated          int
	Flags              OperatorFlags
	RawWarm            time.Duration
	RawDur             time.Duration
	Sweep              []int
	DefaultsRun        bool
	DefaultsN          int
	CompareConcurrency int
	Deadline           time.Time
	Notes              string
	Smoke              bool
	Secretless         Secretless
}

func main() {
	var c Config
	var sizes, sweep string
	smoke := flag.Bool("smoke", false, "small and quick: N=50, 60 s steady states (with client secrets and secretless), 1,000 unrelated Secrets; writes into bin/bench-smoke/ unless -out is given")
	flag.StringVar(&c.Root, "root", ".", "repository root")
	flag.StringVar(&c.Out, "out", "", "Markdown report (default docs/benchmarks.md; smoke: bin/bench-smoke/benchmarks.md)")
	flag.StringVar(&sizes, "sizes", "100,1000,5000", "burst sizes N of the scaling curve (five-minute tokens)")
	flag.IntVar(&c.SteadyN, "steady-n", 1000, "resources in the steady state (30 s tokens)")
	flag.DurationVar(&c.Steady, "steady", 10*time.Minute, "length of the steady state")
	flag.DurationVar(&c.Settle, "settle", time.Minute, "time between the steady-state burst and the steady state (its expiries are reported apart)")
	flag.DurationVar(&c.RestartWindow, "restart-window", time.Minute, "how long after a restart Keycloak requests are counted")
	flag.IntVar(&c.Unrelated, "unrelated", 10000, "unrelated 4 KiB Secrets added for the memory step")
	flag.IntVar(&c.Flags.Concurrency, "concurrency", 16, "operator --concurrency in the raised-limit runs, also the raw load generators' concurrency")
	flag.Float64Var(&c.Flags.KubeQPS, "kube-api-qps", 500, "operator --kube-api-qps in the raised-limit runs")
	flag.IntVar(&c.Flags.KubeBurst, "kube-api-burst", 1000, "operator --kube-api-burst in the raised-limit runs")
	flag.Float64Var(&c.Flags.KeycloakQPS, "keycloak-qps", 0, "operator --keycloak-qps in the raised-limit runs (0: unlimited)")
	flag.IntVar(&c.Flags.KeycloakBurst, "keycloak-burst", 100, "operator --keycloak-burst in the raised-limit runs")
	flag.Float64Var(&c.Flags.KeycloakPerHostQPS, "keycloak-qps-per-host", 0, "operator --keycloak-qps-per-host in the raised-limit runs (0: unlimited)")
	flag.IntVar(&c.Flags.KeycloakPerHostBurst, "keycloak-burst-per-host", 50, "operator --keycloak-burst-per-host in the raised-limit runs")
	flag.DurationVar(&c.RawWarm, "raw-warm", 30*time.Second, "warm-up of each raw load generator (Keycloak's JIT)")
	flag.DurationVar(&c.RawDur, "raw-duration", 20*time.Second, "measured time of each raw load generator")
	flag.StringVar(&sweep, "raw-sweep", "4,8", "further concurrencies of the raw Keycloak load generator (shows where Keycloak saturates)")
	flag.BoolVar(&c.DefaultsRun, "defaults-run", true, "also run a burst with the operator's default flags")
	flag.IntVar(&c.DefaultsN, "defaults-n", 1000, "N of the default-flags burst")
	flag.IntVar(&c.CompareConcurrency, "compare-concurrency", 4, "also a raised-limit burst of defaults-n at this --concurrency (0: skip)")
	flag.BoolVar(&keepWork, "keep", false, "keep the work directory (operator and Keycloak logs)")
	flag.BoolVar(&inline, "inline", false, "resources name their Keycloak and client secret inline (read at every rotation) instead of using a KeycloakIssuer (the secret watched)")
	flag.BoolVar(&c.Secretless.Run, "secretless", true, "also a steady state of clients without secrets: a KeycloakIssuer with clientAuth.serviceAccount (service-account tokens, Keycloak's federated client authentication)")
	flag.IntVar(&c.Secretless.N, "secretless-n", 200, "resources in the secretless steady state (30 s tokens)")
	flag.DurationVar(&c.Secretless.Steady, "secretless-steady", 6*time.Minute, "length of the secretless steady state (with 10-minute service-account tokens ≥ 6m lets the window include one token renewal)")
	flag.DurationVar(&c.Secretless.SALifetime, "secretless-sa-lifetime", 10*time.Minute, "operator --serviceaccount-token-lifetime in the secretless phase (0: the operator's default, 1h)")
	flag.StringVar(&c.Notes, "notes", "", "text added to the report (e.g. what was scaled down)")
	render := flag.String("render", "", "only re-render the report (markdown and plots) from a results.json of an earlier run")
	deadline := flag.String("deadline", "", "UTC HH:MM after which no further phase starts (skipped phases are listed in the report)")
	flag.Parse()
	c.Smoke = *smoke
	if *deadline != "" {
		t, err := time.Parse("15:04", *deadline)
		if err != nil {
			fail(fmt.Errorf("-deadline: %w", err))
		}
		now := time.Now().UTC()
		c.Deadline = time.Date(now.Year(), now.Month(), now.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC)
		if c.Deadline.Before(now.Add(-12 * time.Hour)) {
			c.Deadline = c.Deadline.Add(24 * time.Hour)
		}
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.Smoke {
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("sizes", func() { sizes = "50" })
		def("steady-n", func() { c.SteadyN = 50 })
		def("steady", func() { c.Steady = time.Minute })
		def("restart-window", func() { c.RestartWindow = 30 * time.Second })
		def("settle", func() { c.Settle = 15 * time.Second })
		def("unrelated", func() { c.Unrelated = 1000 })
		def("raw-warm", func() { c.RawWarm = 5 * time.Second })
		def("raw-duration", func() { c.RawDur = 5 * time.Second })
		def("raw-sweep", func() { sweep = "" })
		def("defaults-n", func() { c.DefaultsN = 50 })
		def("secretless-n", func() { c.Secretless.N = 50 })
		def("secretless-steady", func() { c.Secretless.Steady = time.Minute })
		def("out", func() { c.Out = filepath.Join(c.Root, "bin", "bench-smoke", "benchmarks.md") })
	}
	if c.Out == "" {
		c.Out = filepath.Join(c.Root, "docs", "benchmarks.md")
	}
	c.PNGDir = filepath.Join(filepath.Dir(c.Out), "benchmarks")
	var err error
	if c.Sizes, err = ints(sizes); err != nil {
		fail(err)
	}
	if c.Sweep, err = ints(sweep); err != nil {
		fail(err)
	}
	if *render != "" {
		raw, err := os.ReadFile(*render)
		if err != nil {
			fail(err)
		}
		var rep Report
		if err := json.Unmarshal(raw, &rep); err != nil {
			fail(err)
		}
		rc := rep.Config
		rc.Root, rc.Out, rc.PNGDir = c.Root, c.Out, c.PNGDir
		if c.Notes != "" {
			rc.Notes = c.Notes
		}
		if err := os.MkdirAll(rc.PNGDir, 0o755); err != nil {
			fail(err)
		}
		if err := rep.write(rc); err != nil {
			fail(err)
		}
		return
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" || os.Getenv("KEYCLOAK_HOME") == "" {
		fail(fmt.Errorf("set KUBEBUILDER_ASSETS (bin/k8s) and KEYCLOAK_HOME (bin/keycloak-26.7.3); `make bench` does"))
	}
	if err := os.MkdirAll(c.PNGDir, 0o755); err != nil {
		fail(err)
	}
	// The harness's informers use controller-runtime; keep its log quiet but visible on errors.
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	rep, err := run(ctx, c)
	if rep != nil {
		rep.Config = c
		if raw, jerr := json.MarshalIndent(rep, "", "  "); jerr == nil {
			if werr := os.WriteFile(filepath.Join(c.PNGDir, "results.json"), raw, 0o644); werr != nil {
				logf("results.json: %v", werr)
			}
		} else {
			logf("results.json: %v", jerr)
		}
		if werr := rep.write(c); werr != nil {
			fmt.Fprintln(os.Stderr, "writing the report:", werr)
		}
	}
	if err != nil {
		fail(err)
	}
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", f, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// Report is everything measured in one run.
type Report struct {
	Start, End  time.Time
	Cores       int
	MemTotal    string
	CPUModel    string
	RawKC       []RawResult // [0] at the operator's concurrency
	RawAPI      []RawResult // operator's QPS, client-go default-ish 50/100, unthrottled
	Scaling     []*BurstResult
	SteadyBurst *BurstResult
	Steady      *SteadyResult
	Restart     *RestartResult
	Secretless  *SecretlessResult
	Defaults    *BurstResult
	Compare     *BurstResult
	Errors      []string
	Skipped     []string
	Config      Config
}

func run(ctx context.Context, c Config) (*Report, error) {
	rep := &Report{Start: time.Now(), Cores: runtime.NumCPU(), MemTotal: memTotal(), CPUModel: cpuModel()}
	defer func() { rep.End = time.Now() }()
	logf("starting Keycloak, the API server and building the operator")
	e, err := startEnv(ctx, c.Root)
	if e != nil {
		defer e.Close()
	}
	if err != nil {
		return nil, err
	}

	// 1. The limit.
	tokenURL := e.TokenURL()
	probe := func(r *RawResult) Probe {
		return func() func(*RawResult) {
			c0, m0 := e.cpuSnapshot(nil), readMachine()
			return func(r *RawResult) {
				r.Cores, r.Machine = e.cpuSnapshot(nil).CoresSince(c0), readMachine().coresSince(m0)
			}
		}
	}
	for i, conc := range append([]int{c.Flags.Concurrency}, c.Sweep...) {
		warm, dur := c.RawWarm, c.RawDur
		if i > 0 {
			warm, dur = c.RawWarm/4, c.RawDur/2
		}
		logf("raw Keycloak client-credentials issuance, concurrency %d", conc)
		r, err := rawKeycloak(ctx, tokenURL, clientLong, clientLongSecret, conc, warm, dur, probe(nil))
		if err != nil {
			return rep, fmt.Errorf("raw Keycloak: %w", err)
		}
		logf("  %.1f tokens/s, p50 %s, p99 %s; CPU: %s", r.Rate, r.P50, r.P99, r.Cores)
		rep.RawKC = append(rep.RawKC, r)
	}
	if err := e.namespace(ctx, "raw", withSecrets); err != nil {
		return rep, err
	}
	for _, q := range []struct {
		qps   float32
		burst int
	}{{float32(c.Flags.KubeQPS), c.Flags.KubeBurst}, {50, 100}, {0, 0}} {
		logf("raw Secret updates, concurrency %d, client QPS %v/%d", c.Flags.Concurrency, q.qps, q.burst)
		r, err := rawSecretUpdates(ctx, e.Cfg, "raw", c.Flags.Concurrency, q.qps, q.burst, c.RawWarm/4, c.RawDur/2, probe(nil))
		if err != nil {
			return rep, fmt.Errorf("raw Secret updates: %w", err)
		}
		logf("  %.1f updates/s, p50 %s, p99 %s; CPU: %s", r.Rate, r.P50, r.P99, r.Cores)
		rep.RawAPI = append(rep.RawAPI, r)
	}
	if c.Flags.Concurrency != 16 {
		// The unthrottled API limit at a higher concurrency too.
		r, err := rawSecretUpdates(ctx, e.Cfg, "raw", 16, 0, 0, c.RawWarm/4, c.RawDur/2, probe(nil))
		if err == nil {
			logf("raw Secret updates, concurrency 16, unthrottled: %.1f updates/s; CPU: %s", r.Rate, r.Cores)
			rep.RawAPI = append(rep.RawAPI, r)
		}
	}

	// Phases in order of priority: the scaling sizes up to the steady state's N, the steady
	// state, the secretless steady state, larger sizes, then the comparison runs. A phase that
	// would start after -deadline is skipped and listed in the report.
	type phase struct {
		name string
		run  func() error
	}
	var phases []phase
	scale := func(n int) phase {
		return phase{fmt.Sprintf("burst and memory at N=%d", n), func() error {
			ns := fmt.Sprintf("scale-%d", n)
			logf("burst N=%d (five-minute tokens), operator %s", n, c.Flags)
			b, err := e.burstPhase(ctx, ns, withSecrets, n, 5*time.Minute, c.Flags, fmt.Sprintf("burst N=%d", n), func(op *Operator, b *BurstResult) error {
				return e.memory(ctx, op, ns, b, c.Unrelated)
			})
			if b != nil {
				rep.Scaling = append(rep.Scaling, b)
			}
			return err
		}}
	}
	for _, n := range c.Sizes {
		if n <= c.SteadyN {
			phases = append(phases, scale(n))
		}
	}
	if c.Steady > 0 {
		phases = append(phases, phase{fmt.Sprintf("steady state and restart at N=%d", c.SteadyN), func() error {
			ns := "steady"
			logf("steady state: burst N=%d (30 s tokens), then %s", c.SteadyN, c.Steady)
			_, err := e.burstPhase(ctx, ns, withSecrets, c.SteadyN, 30*time.Second, c.Flags, "steady-state burst", func(op *Operator, b *BurstResult) error {
				rep.SteadyBurst = b
				w, err := e.watch(ctx, ns)
				if err != nil {
					return err
				}
				defer w.Stop()
				s, err := e.settleAndSteady(ctx, op, w, ns, c.SteadyN, c.Settle, c.Steady)
				if err != nil {
					return err
				}
				rep.Steady = s
				logf("restart with %d valid tokens", c.SteadyN)
				rr, err := e.restart(ctx, op, w, ns, c.SteadyN, c.Flags, c.RestartWindow)
				if rr != nil && rr.NewOp != nil {
					defer rr.NewOp.Stop()
				}
				if err != nil {
					return err
				}
				rep.Restart = rr
				logf("  %.0f Keycloak requests in %s; %d renewals due (%d already due at start); premature %d",
					rr.Requests, rr.Window, rr.Due, rr.DueAtStart, rr.Premature)
				return nil
			})
			return err
		}})
	}
	if c.Secretless.Run && c.Secretless.Steady > 0 {
		phases = append(phases, phase{fmt.Sprintf("secretless steady state at N=%d", c.Secretless.N), func() error {
			s, err := e.secretlessPhase(ctx, c.Secretless, c.Flags, c.Settle)
			rep.Secretless = s
			return err
		}})
	}
	for _, n := range c.Sizes {
		if n > c.SteadyN {
			phases = append(phases, scale(n))
		}
	}
	if c.DefaultsRun {
		phases = append(phases, phase{"default-flag burst", func() error {
			logf("burst N=%d with the operator's default flags", c.DefaultsN)
			b, err := e.burstPhase(ctx, "defaults", withSecrets, c.DefaultsN, 5*time.Minute, OperatorFlags{Defaults: true}, "default flags", nil)
			rep.Defaults = b
			return err
		}})
	}
	if c.CompareConcurrency > 0 && c.CompareConcurrency != c.Flags.Concurrency {
		phases = append(phases, phase{fmt.Sprintf("raised-limit burst at --concurrency=%d", c.CompareConcurrency), func() error {
			f := c.Flags
			f.Concurrency = c.CompareConcurrency
			logf("burst N=%d with raised limits at --concurrency=%d", c.DefaultsN, f.Concurrency)
			b, err := e.burstPhase(ctx, fmt.Sprintf("concurrency-%d", f.Concurrency), withSecrets, c.DefaultsN, 5*time.Minute, f, fmt.Sprintf("raised limits, concurrency %d", f.Concurrency), nil)
			rep.Compare = b
			return err
		}})
	}
	for _, p := range phases {
		if !c.Deadline.IsZero() && time.Now().After(c.Deadline) {
			logf("SKIPPED (past the deadline %s): %s", c.Deadline.UTC().Format("15:04"), p.name)
			rep.Skipped = append(rep.Skipped, p.name)
			continue
		}
		if err := p.run(); err != nil {
			rep.Errors = append(rep.Errors, p.name+": "+err.Error())
			logf("  ERROR: %v", err)
			if ctx.Err() != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}
