package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// RawResult is the throughput of a direct load generator.
type RawResult struct {
	Concurrency int
	Rate        float64 // successful operations per second
	Errors      int64
	P50, P99    time.Duration
	Cores       Cores
	Machine     float64
	QPS         float32
	Burst       int
}

// rawKeycloak issues client-credentials tokens as fast as `conc` workers can, with connection
// reuse, for warm+dur; only the last dur counts.
func rawKeycloak(ctx context.Context, tokenURL, clientID, secret string, conc int, warm, dur time.Duration, probe Probe) (RawResult, error) {
	tr := &http.Transport{MaxIdleConns: conc * 2, MaxIdleConnsPerHost: conc * 2, IdleConnTimeout: 90 * time.Second}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	body := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}}.Encode()
	one := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "access_token") {
			return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, b)
		}
		return nil
	}
	if err := one(); err != nil {
		return RawResult{}, fmt.Errorf("token request: %w", err)
	}
	return loadLoop(ctx, conc, warm, dur, probe, func(int) error { return one() })
}

// loadLoop runs fn in conc workers for warm+dur and measures the last dur.
// Probe is called when the measured window starts; what it returns is called at its end.
type Probe func() func(*RawResult)

func loadLoop(ctx context.Context, conc int, warm, dur time.Duration, probe Probe, fn func(worker int) error) (RawResult, error) {
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		ok, errs  atomic.Int64
		mu        sync.Mutex
		lats      []time.Duration
		lastErr   atomic.Value
		wg        sync.WaitGroup
	)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for !stop.Load() && ctx.Err() == nil {
				t := time.Now()
				err := fn(w)
				m := measuring.Load()
				if err != nil {
					if m {
						errs.Add(1)
					}
					lastErr.Store(err.Error())
					continue
				}
				if m && !stop.Load() {
					ok.Add(1)
					local = append(local, time.Since(t))
				}
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		}()
	}
	time.Sleep(warm)
	measuring.Store(true)
	var done func(*RawResult)
	if probe != nil {
		done = probe()
	}
	start := time.Now()
	time.Sleep(dur)
	stop.Store(true)
	elapsed := time.Since(start)
	r := RawResult{Concurrency: conc, Rate: float64(ok.Load()) / elapsed.Seconds(), Errors: errs.Load()}
	if done != nil {
		done(&r)
	}
	wg.Wait()
	r.Rate = float64(ok.Load()) / elapsed.Seconds()
	if len(lats) > 0 {
		sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
		r.P50, r.P99 = pct(lats, 50), pct(lats, 99)
	}
	if r.Errors > 0 {
		logf("  %d errors, last: %v", r.Errors, lastErr.Load())
	}
	return r, ctx.Err()
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// rawSecretUpdates updates Secrets as fast as `conc` workers can through a client with the
// given QPS/burst (qps ≤ 0: unthrottled); each worker owns its own Secrets, so there are no
// conflicts. The Secrets look like the operator's (≈1.3 KiB token, four annotations).
func rawSecretUpdates(ctx context.Context, cfg *rest.Config, ns string, conc int, qps float32, burst int, warm, dur time.Duration, probe Probe) (RawResult, error) {
	cfg = rest.CopyConfig(cfg)
	if qps > 0 {
		cfg.QPS, cfg.Burst = qps, burst
	} else {
		cfg.QPS, cfg.Burst = 1e6, 1e6
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return RawResult{}, err
	}
	const perWorker = 4
	secrets := make([][]*corev1.Secret, conc)
	token := strings.Repeat("x", 1300)
	admin, err := kubernetes.NewForConfig(rest.CopyConfig(cfg))
	if err != nil {
		return RawResult{}, err
	}
	for w := range conc {
		for i := range perWorker {
			s, err := admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("raw-q%d-%d-%d", int(qps), w, i), Namespace: ns,
					Annotations: map[string]string{annIssuedAt: "", annRenewAt: ""}},
				StringData: map[string]string{"token": token},
			}, metav1.CreateOptions{})
			if err != nil {
				return RawResult{}, err
			}
			secrets[w] = append(secrets[w], s)
		}
	}
	n := make([]int, conc)
	r, err := loadLoop(ctx, conc, warm, dur, probe, func(w int) error {
		i := n[w] % perWorker
		n[w]++
		s := secrets[w][i].DeepCopy()
		s.Annotations[annIssuedAt] = strconv.Itoa(n[w])
		s.Data["token"] = []byte(token[:1200] + strconv.Itoa(n[w]))
		out, err := cs.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{})
		if err != nil {
			return err
		}
		secrets[w][i] = out
		return nil
	})
	r.QPS, r.Burst = qps, burst
	return r, err
}
