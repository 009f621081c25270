package main

import (
	"fmt"
	"time"
)

// The operator's counters, scraped from its /metrics at the start and end of a phase.

// Counters the harness reads at the start and end of a phase.
type Counters struct {
	At         time.Time
	KC         float64 // Keycloak token-endpoint requests (all grants and outcomes)
	KCFailed   float64
	Writes     float64 // PUT+PATCH+POST
	Puts       float64
	Patches    float64
	Posts      float64
	Gets       float64
	CPU        float64 // from /proc
	HeapInUse  float64
	Reconciles float64
	Conflicts  float64 // API answers 409
	// TokenRequests for service-account tokens (mlflow_token_serviceaccount_token_requests_total,
	// all outcomes; the failed ones apart): the secretless clients' cost at the API server.
	SATokens, SATokensFailed float64
	// Latency sums and counts (seconds): where a reconcile spends its time.
	KCDur, KCDurN          float64 // mlflow_token_keycloak_request_duration_seconds
	RecDur, RecDurN        float64 // controller_runtime_reconcile_time_seconds
	APIDur, APIDurN        float64 // rest_client_request_duration_seconds
	ThrottleDur, ThrottleN float64 // rest_client_rate_limiter_duration_seconds (client-side QPS limit)
	QueueDur, QueueN       float64 // workqueue_queue_duration_seconds
}

// Mean is sum/count as a duration.
func Mean(sum, n float64) time.Duration {
	if n == 0 {
		return 0
	}
	return time.Duration(sum / n * float64(time.Second))
}

func (o *Operator) Counters() (Counters, error) {
	m, err := o.Metrics()
	if err != nil {
		return Counters{}, err
	}
	c := Counters{At: time.Now(), CPU: o.CPU()}
	// Token requests only: the issuer controller's discovery requests (one per issuer at start,
	// then one per issuer every --issuer-recheck-interval) are not rotations' cost.
	c.KC = m.Sum(metricKCRequests, `endpoint="token"`)
	c.KCFailed = c.KC - m.Sum(metricKCRequests, `endpoint="token"`, `outcome="success"`)
	c.Puts = m.Sum("rest_client_requests_total", `method="PUT"`)
	c.Patches = m.Sum("rest_client_requests_total", `method="PATCH"`)
	c.Posts = m.Sum("rest_client_requests_total", `method="POST"`)
	c.Gets = m.Sum("rest_client_requests_total", `method="GET"`)
	c.Writes = c.Puts + c.Patches + c.Posts
	c.HeapInUse = m.Sum("go_memstats_heap_inuse_bytes")
	c.Reconciles = m.Sum("controller_runtime_reconcile_total")
	c.Conflicts = m.Sum("rest_client_requests_total", `code="409"`)
	c.SATokens = m.Sum(metricSATokenRequests)
	c.SATokensFailed = c.SATokens - m.Sum(metricSATokenRequests, `outcome="success"`)
	c.KCDur, c.KCDurN = m.Sum("mlflow_token_keycloak_request_duration_seconds_sum"), m.Sum("mlflow_token_keycloak_request_duration_seconds_count")
	c.RecDur, c.RecDurN = m.Sum("controller_runtime_reconcile_time_seconds_sum"), m.Sum("controller_runtime_reconcile_time_seconds_count")
	c.APIDur, c.APIDurN = m.Sum("rest_client_request_duration_seconds_sum"), m.Sum("rest_client_request_duration_seconds_count")
	c.ThrottleDur, c.ThrottleN = m.Sum("rest_client_rate_limiter_duration_seconds_sum"), m.Sum("rest_client_rate_limiter_duration_seconds_count")
	c.QueueDur, c.QueueN = m.Sum("workqueue_queue_duration_seconds_sum"), m.Sum("workqueue_queue_duration_seconds_count")
	return c, nil
}

// Sub returns c − b.
func (c Counters) Sub(b Counters) Counters {
	return Counters{At: c.At, KC: c.KC - b.KC, KCFailed: c.KCFailed - b.KCFailed, Writes: c.Writes - b.Writes,
		Puts: c.Puts - b.Puts, Patches: c.Patches - b.Patches, Posts: c.Posts - b.Posts, Gets: c.Gets - b.Gets,
		CPU: c.CPU - b.CPU, HeapInUse: c.HeapInUse, Reconciles: c.Reconciles - b.Reconciles, Conflicts: c.Conflicts - b.Conflicts,
		SATokens: c.SATokens - b.SATokens, SATokensFailed: c.SATokensFailed - b.SATokensFailed,
		KCDur: c.KCDur - b.KCDur, KCDurN: c.KCDurN - b.KCDurN, RecDur: c.RecDur - b.RecDur, RecDurN: c.RecDurN - b.RecDurN,
		APIDur: c.APIDur - b.APIDur, APIDurN: c.APIDurN - b.APIDurN, ThrottleDur: c.ThrottleDur - b.ThrottleDur, ThrottleN: c.ThrottleN - b.ThrottleN,
		QueueDur: c.QueueDur - b.QueueDur, QueueN: c.QueueN - b.QueueN}
}

// Latencies renders where the time went.
func (c Counters) Latencies() string {
	s := fmt.Sprintf("reconciles %.0f (mean %s), Keycloak call mean %s, workqueue wait mean %s",
		c.RecDurN, Mean(c.RecDur, c.RecDurN).Round(100*time.Microsecond), Mean(c.KCDur, c.KCDurN).Round(100*time.Microsecond),
		Mean(c.QueueDur, c.QueueN).Round(100*time.Microsecond))
	// controller-runtime does not export client-go's latency metrics; shown when present.
	if c.APIDurN > 0 {
		s += fmt.Sprintf(", API call mean %s", Mean(c.APIDur, c.APIDurN).Round(100*time.Microsecond))
	}
	if c.ThrottleN > 0 {
		s += fmt.Sprintf(", client-side throttling mean %s", Mean(c.ThrottleDur, c.ThrottleN).Round(100*time.Microsecond))
	}
	return s
}
