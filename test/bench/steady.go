package main

import (
	"context"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// SteadyResult is the steady state with short tokens.
type SteadyResult struct {
	N              int
	Start          time.Time
	Duration       time.Duration
	Rotations      int64
	Delta          Counters
	Expired        int
	RotationSeries []int // rotations seen per 10 s
	KCSeries       []float64
	Cores          Cores
	Machine        float64
	API            APIDelta
	// Expiries between the end of the burst and the start of the steady state.
	Settle            time.Duration
	TransitionExpired int
}

func (e *Env) sumRotations(ctx context.Context, ns string) (int64, error) {
	var l authv1alpha1.MLflowAccessTokenList
	if err := e.C.List(ctx, &l, client.InNamespace(ns)); err != nil {
		return 0, err
	}
	var s int64
	for _, t := range l.Items {
		s += t.Status.Rotations
	}
	return s, nil
}

func (e *Env) steady(ctx context.Context, op *Operator, w *Watcher, ns string, n int, d time.Duration) (*SteadyResult, error) {
	r := &SteadyResult{N: n, Duration: d}
	rot0, err := e.sumRotations(ctx, ns)
	if err != nil {
		return nil, err
	}
	c0, err := op.Counters()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	r.Start = start
	prevKC := c0.KC
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for time.Since(start) < d && ctx.Err() == nil {
		<-tick.C
		if c, err := op.Counters(); err == nil {
			r.KCSeries = append(r.KCSeries, c.KC-prevKC)
			prevKC = c.KC
		}
		if el := time.Since(start); el.Round(time.Second)%time.Minute < 10*time.Second {
			logf("  steady state: %s of %s, expired so far %d", el.Round(time.Second), d, w.Expired(start, time.Now()))
		}
	}
	c1, err := op.Counters()
	if err != nil {
		return nil, err
	}
	rot1, err := e.sumRotations(ctx, ns)
	if err != nil {
		return nil, err
	}
	end := time.Now()
	r.Duration = end.Sub(start)
	r.Delta = c1.Sub(c0)
	r.Rotations = rot1 - rot0
	r.Expired = w.Expired(start, end)
	for _, t := range w.RotationTimes() {
		if t.Before(start) || t.After(end) {
			continue
		}
		i := int(t.Sub(start) / (10 * time.Second))
		if i >= int(r.Duration/(10*time.Second)) {
			continue // a partial last bin
		}
		for len(r.RotationSeries) <= i {
			r.RotationSeries = append(r.RotationSeries, 0)
		}
		r.RotationSeries[i]++
	}
	return r, nil
}

// settleAndSteady waits `settle` after a burst, then measures the steady state for d. The burst's
// first renewals compete with its last issuances: expiries in that transition are counted apart.
func (e *Env) settleAndSteady(ctx context.Context, op *Operator, w *Watcher, ns string, n int, settle, d time.Duration) (*SteadyResult, error) {
	settleStart := time.Now()
	logf("  transition: %s before the steady state is counted", settle)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(settle):
	}
	transition := w.Expired(settleStart, time.Now())
	c0, m0, a0 := e.cpuSnapshot(op), readMachine(), e.apiSnapshot(ctx)
	s, err := e.steady(ctx, op, w, ns, n, d)
	if err != nil {
		return nil, err
	}
	s.Settle, s.TransitionExpired = settle, transition
	logf("  %d tokens expired in the transition", transition)
	s.Cores, s.Machine = e.cpuSnapshot(op).CoresSince(c0), readMachine().coresSince(m0)
	s.API = e.apiSnapshot(ctx).Since(a0)
	logf("  operator: %s; machine busy %.2f cores", s.Delta.Latencies(), s.Machine)
	logf("  API server: %s", s.API)
	logf("  %d rotations, %.0f reconciles, %.0f Keycloak requests, %.0f writes (PUT %.0f, PATCH %.0f, POST %.0f; %.0f answered 409), %.0f GETs, %.0f TokenRequests, %d expired, %.2f CPU s; CPU: %s",
		s.Rotations, s.Delta.Reconciles, s.Delta.KC, s.Delta.Writes, s.Delta.Puts, s.Delta.Patches, s.Delta.Posts, s.Delta.Conflicts, s.Delta.Gets, s.Delta.SATokens, s.Expired, s.Delta.CPU, s.Cores)
	return s, nil
}
