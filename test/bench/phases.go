package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// BurstResult is one burst: N resources created at once.
type BurstResult struct {
	Label       string
	N           int
	Lifespan    time.Duration
	Flags       OperatorFlags
	Created     time.Duration // creating all N (the harness, 16 parallel clients)
	AllReady    time.Duration // first create → last Ready
	Ready       int           // how many became Ready within the timeout
	Rate        float64       // N / AllReady
	Rate1090    float64       // 80% of N / (t90 − t10) of the Ready times: the rate once running
	P50, P99    time.Duration // create → Ready
	Delta       Counters      // operator counters over the burst
	MaxPerSec   int           // most renew-at in one second
	RenewHist   []int         // renewals per second from the earliest renew-at
	RSS         int64         // after the burst settled
	RSSUnrel    int64         // after adding the unrelated Secrets
	HeapInUse   float64
	HeapUnrel   float64
	Unrelated   int
	UnrelCreate time.Duration
	Cores       Cores   // CPU per component over the burst
	Machine     float64 // whole machine's busy cores over the burst
	API         APIDelta
}

// burstPhase: namespace, operator, watcher, burst, then `then` with the operator still running.
func (e *Env) burstPhase(ctx context.Context, ns string, fl fleet, n int, lifespan time.Duration, f OperatorFlags, label string, then func(*Operator, *BurstResult) error) (*BurstResult, error) {
	if err := e.namespace(ctx, ns, fl); err != nil {
		return nil, err
	}
	op, err := e.startOperator(ctx, ns, ns, f)
	if err != nil {
		return nil, err
	}
	defer op.Stop()
	if err := e.waitIssuers(ctx, ns, fl); err != nil {
		return nil, err
	}
	w, err := e.watch(ctx, ns)
	if err != nil {
		return nil, err
	}
	c0, m0, a0 := e.cpuSnapshot(op), readMachine(), e.apiSnapshot(ctx)
	timeout := 2*time.Minute + time.Duration(n)*100*time.Millisecond
	b, err := e.burst(ctx, op, w, ns, fl, n, lifespan, timeout)
	w.Stop()
	if b != nil {
		b.Label, b.Flags = label, f
		b.Cores, b.Machine = e.cpuSnapshot(op).CoresSince(c0), readMachine().coresSince(m0)
		b.API = e.apiSnapshot(ctx).Since(a0)
		logf("  all %d Ready after %s (%.1f/s; 10–90%%: %.1f/s), p50 %s, p99 %s; Keycloak requests %.0f, writes %.0f; max %d renewals in one second; CPU: %s",
			b.Ready, b.AllReady.Round(time.Millisecond), b.Rate, b.Rate1090, b.P50.Round(time.Millisecond), b.P99.Round(time.Millisecond),
			b.Delta.KC, b.Delta.Writes, b.MaxPerSec, b.Cores)
		logf("  operator: %s; %.0f answers 409; machine busy %.2f cores", b.Delta.Latencies(), b.Delta.Conflicts, b.Machine)
		logf("  API server: %s", b.API)
	}
	if err != nil {
		return b, err
	}
	if then != nil {
		return b, then(op, b)
	}
	return b, nil
}

// parallel runs fn(i) for i in [0,n) on `workers` goroutines; the first error wins.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// burst creates N resources at once in ns (the operator already runs) and waits until all are
// Ready.
func (e *Env) burst(ctx context.Context, op *Operator, w *Watcher, ns string, f fleet, n int, lifespan time.Duration, timeout time.Duration) (*BurstResult, error) {
	r := &BurstResult{N: n, Lifespan: lifespan}
	before, err := op.Counters()
	if err != nil {
		return nil, err
	}
	created := make([]time.Time, n)
	start := time.Now()
	err = parallel(ctx, n, 16, func(i int) error {
		created[i] = time.Now()
		return e.C.Create(ctx, newToken(ns, fmt.Sprintf("t-%05d", i), e.KC.URL(), lifespan, f))
	})
	if err != nil {
		return nil, fmt.Errorf("creating resources: %w", err)
	}
	r.Created = time.Since(start)
	logf("  created %d resources in %s", n, r.Created.Round(time.Millisecond))
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	for w.ReadyCount() < n && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		if time.Since(lastLog) > 10*time.Second {
			logf("  %d/%d Ready", w.ReadyCount(), n)
			lastLog = time.Now()
		}
	}
	after, err := op.Counters()
	if err != nil {
		return nil, err
	}
	r.Delta = after.Sub(before)
	ready := w.ReadyTimes()
	r.Ready = len(ready)
	var lats []time.Duration
	var readyTimes []time.Time
	var last time.Time
	for i := range n {
		t, ok := ready[fmt.Sprintf("t-%05d", i)]
		if !ok {
			continue
		}
		lats = append(lats, t.Sub(created[i]))
		readyTimes = append(readyTimes, t)
		if t.After(last) {
			last = t
		}
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	sort.Slice(readyTimes, func(i, j int) bool { return readyTimes[i].Before(readyTimes[j]) })
	r.P50, r.P99 = pct(lats, 50), pct(lats, 99)
	if r.Ready < n {
		return r, fmt.Errorf("only %d of %d resources Ready after %s", r.Ready, n, timeout)
	}
	r.AllReady = last.Sub(start)
	r.Rate = float64(n) / r.AllReady.Seconds()
	if n >= 20 {
		t10, t90 := readyTimes[n/10], readyTimes[n*9/10]
		if d := t90.Sub(t10).Seconds(); d > 0 {
			r.Rate1090 = float64(n*9/10-n/10) / d
		}
	}
	if r.Rate1090 == 0 {
		r.Rate1090 = r.Rate
	}
	// Spread: the renew-at annotations of the tokens issued in the burst.
	cur := w.Current()
	var renew []time.Time
	for _, v := range cur {
		renew = append(renew, v.RenewAt)
	}
	r.RenewHist, r.MaxPerSec = histogram(renew)
	return r, nil
}

// histogram counts times per whole second from the earliest.
func histogram(ts []time.Time) ([]int, int) {
	if len(ts) == 0 {
		return nil, 0
	}
	min := ts[0]
	for _, t := range ts {
		if t.Before(min) {
			min = t
		}
	}
	var h []int
	for _, t := range ts {
		i := int(t.Unix() - min.Unix())
		for len(h) <= i {
			h = append(h, 0)
		}
		h[i]++
	}
	max := 0
	for _, c := range h {
		if c > max {
			max = c
		}
	}
	return h, max
}

// settledRSS reads RSS and heap three times a second apart and keeps the median.
func settledRSS(op *Operator) (int64, float64) {
	var rss []int64
	var heap []float64
	for i := range 3 {
		if i > 0 {
			time.Sleep(time.Second)
		}
		rss = append(rss, op.RSS())
		if c, err := op.Counters(); err == nil {
			heap = append(heap, c.HeapInUse)
		}
	}
	sort.Slice(rss, func(i, j int) bool { return rss[i] < rss[j] })
	sort.Float64s(heap)
	h := 0.0
	if len(heap) > 0 {
		h = heap[len(heap)/2]
	}
	return rss[1], h
}

// memory measures RSS with the burst's resources, then after adding `unrelated` 4 KiB Secrets
// (no operator label) to the operator's namespace, then deletes them again.
func (e *Env) memory(ctx context.Context, op *Operator, ns string, r *BurstResult, unrelated int) error {
	time.Sleep(3 * time.Second)
	r.RSS, r.HeapInUse = settledRSS(op)
	payload := []byte(strings.Repeat("u", 4096))
	start := time.Now()
	err := parallel(ctx, unrelated, 16, func(i int) error {
		return e.C.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("unrelated-%05d", i), Namespace: ns, Labels: map[string]string{"bench": "unrelated"}},
			Data:       map[string][]byte{"blob": payload},
		})
	})
	if err != nil {
		return fmt.Errorf("creating unrelated Secrets: %w", err)
	}
	r.UnrelCreate = time.Since(start)
	r.Unrelated = unrelated
	time.Sleep(5 * time.Second)
	r.RSSUnrel, r.HeapUnrel = settledRSS(op)
	logf("  RSS %s → %s after %d unrelated Secrets (created in %s)", mib(r.RSS), mib(r.RSSUnrel), unrelated, r.UnrelCreate.Round(time.Millisecond))
	return e.C.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(ns), client.MatchingLabels{"bench": "unrelated"})
}

// RestartResult: the operator restarted with N valid tokens.
type RestartResult struct {
	N             int
	Window        time.Duration
	Requests      float64 // Keycloak requests by the new process in the window
	Due           int     // renewals that fell due in the window (renew-at of every version seen)
	DueAtStart    int     // renew-at already passed when the new process started (due while it was down)
	Requests10s   float64
	Due10s        int
	Premature     int // rotations whose previous token was not yet due (1 s tolerance)
	Rotations     int
	DownFor       time.Duration
	ReqPerSecond  []float64
	DuePerSecond  []int
	NewOp         *Operator `json:"-"`
	StartupToSync time.Duration
}

func (e *Env) restart(ctx context.Context, old *Operator, w *Watcher, ns string, n int, f OperatorFlags, window time.Duration) (*RestartResult, error) {
	r := &RestartResult{N: n, Window: window}
	stopAt := time.Now()
	old.Stop()
	time.Sleep(time.Second) // the last writes of the old process reach the watch
	snap := w.Current()
	op, err := e.startOperator(ctx, "restart", ns, f)
	if err != nil {
		return nil, err
	}
	r.NewOp = op
	t0 := op.Started
	r.DownFor = t0.Sub(stopAt)
	end := t0.Add(window)
	r.ReqPerSecond = make([]float64, int(window/time.Second))
	r.DuePerSecond = make([]int, int(window/time.Second))
	prev := 0.0
	for s := 1; s <= int(window/time.Second); s++ {
		time.Sleep(time.Until(t0.Add(time.Duration(s) * time.Second)))
		c, err := op.Counters()
		if err != nil {
			return nil, err
		}
		r.ReqPerSecond[s-1] = c.KC - prev
		prev = c.KC
		if s == 10 {
			r.Requests10s = c.KC
		}
	}
	r.Requests = prev
	due := func(ra time.Time) {
		if ra.Before(end) {
			r.Due++
			i := int(ra.Sub(t0) / time.Second)
			if i < 0 {
				i = 0
				r.DueAtStart++
			}
			if i < len(r.DuePerSecond) {
				r.DuePerSecond[i]++
			}
			if ra.Before(t0.Add(10 * time.Second)) {
				r.Due10s++
			}
		}
	}
	for _, v := range snap {
		due(v.RenewAt)
	}
	for _, c := range w.Changes(t0, end.Add(2*time.Second)) {
		if c.New.IssuedAt.Before(t0.Add(-time.Second)) {
			continue // a late event of the old process
		}
		r.Rotations++
		// renew-at is truncated to whole seconds, issued-at too: a due rotation has
		// prev.RenewAt ≤ new.IssuedAt.
		if c.New.IssuedAt.Add(time.Second).Before(c.Prev.RenewAt) {
			r.Premature++
		}
		due(c.New.RenewAt)
	}
	return r, nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
