package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the nudges of consumer pods (internal/nudge).
const (
	NamePodNudges     = "mlflow_token_pod_nudges_total"
	NamePodNudgeDelay = "mlflow_token_pod_nudge_delay_seconds"
)

var (
	podNudges = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NamePodNudges,
		Help: "Nudges of consumer pods after a rotation (an annotation patch that makes the kubelet rewrite the Secret volume at once), by outcome: nudged, gone (the pod was deleted meanwhile), forbidden, rejected (admission), throttled, error."},
		[]string{"outcome"})
	podNudgeDelay = prometheus.NewHistogram(prometheus.HistogramOpts{Name: NamePodNudgeDelay,
		Help:    "Time from the write of a new token to the Secret until a consumer pod was nudged (the kubelet then rewrites the volume, typically within 0.2 s). Grows when the nudge rate limit (--nudge-qps) holds nudges back.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}})
)

func init() {
	ctrlmetrics.Registry.MustRegister(podNudges, podNudgeDelay)
}

// PodNudge counts one nudge by outcome; delay (only for nudged pods) is the time since the write.
func PodNudge(outcome string, delay time.Duration) {
	podNudges.WithLabelValues(outcome).Inc()
	if outcome == "nudged" {
		podNudgeDelay.Observe(delay.Seconds())
	}
}
