package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the CSI node plugin (internal/csinode), one process per node. Series carry the
// issuer as the volume names it ("ClusterKeycloakIssuer/<name>") and the pod's namespace, never a
// pod: pods come and go by the thousand, and a token is per pod.
const (
	NameCSIVolumes        = "mlflow_token_csi_volumes"
	NameCSIExpired        = "mlflow_token_csi_expired_volumes"
	NameCSIIssuances      = "mlflow_token_csi_issuances_total"
	NameCSIFailures       = "mlflow_token_csi_failures_total"
	NameCSIRevocations    = "mlflow_token_csi_revocations_total"
	NameCSIDelivery       = "mlflow_token_csi_delivery_seconds"
	NameCSINextRotation   = "mlflow_token_csi_next_rotation_timestamp_seconds"
	NameCSIMountDuration  = "mlflow_token_csi_publish_duration_seconds"
	NameCSIRegistered     = "mlflow_token_csi_registered"
	csiIssuerLabel        = "issuer"
	csiNamespaceLabel     = "namespace"
	csiDeliveryBucketBase = 0.0005
)

var (
	csiVolumes = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameCSIVolumes,
		Help: "Volumes this node plugin serves (one per pod and volume)."}, []string{csiIssuerLabel, csiNamespaceLabel})
	csiExpired = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameCSIExpired,
		Help: "Volumes whose current token has expired: their pods' MLflow calls fail until a rotation succeeds."}, []string{csiIssuerLabel, csiNamespaceLabel})
	csiIssuances = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameCSIIssuances,
		Help: "Tokens obtained by the node plugin, by kind: mount (a new volume) or rotation."}, []string{csiIssuerLabel, csiNamespaceLabel, "kind"})
	csiFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameCSIFailures,
		Help: "Failed attempts by kind (mount, rotation) and reason (the gRPC code or Keycloak's reason)."}, []string{csiIssuerLabel, csiNamespaceLabel, "kind", "reason"})
	csiRevocations = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameCSIRevocations,
		Help: "Revocations when pods end, by outcome: revoked, failed (will retry), expired (expired before it could be revoked)."}, []string{csiIssuerLabel, csiNamespaceLabel, "outcome"})
	csiDelivery = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: NameCSIDelivery,
		Help:    "Time from Keycloak's answer to the new token readable in the pod's volume (the atomic file swap).",
		Buckets: prometheus.ExponentialBuckets(csiDeliveryBucketBase, 2, 12)}, []string{csiIssuerLabel, csiNamespaceLabel})
	csiNextRotation = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameCSINextRotation,
		Help: "Unix time of the earliest next rotation (or retry) among the volumes of the issuer and namespace."}, []string{csiIssuerLabel, csiNamespaceLabel})
	csiPublish = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: NameCSIMountDuration,
		Help:    "Duration of a first NodePublishVolume that obtained a token: what the volume adds to a pod's start.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{csiIssuerLabel, csiNamespaceLabel})
	csiRegistered = prometheus.NewGauge(prometheus.GaugeOpts{Name: NameCSIRegistered,
		Help: "1 once the kubelet has confirmed the plugin's registration, 0 before or after a refusal."})
)

func init() {
	ctrlmetrics.Registry.MustRegister(csiVolumes, csiExpired, csiIssuances, csiFailures, csiRevocations, csiDelivery, csiNextRotation, csiPublish, csiRegistered)
}

// CSIVolumeCounts are the gauges of one issuer and namespace, recounted after every change.
type CSIVolumeCounts struct {
	Volumes, Expired int
	NextRotation     time.Time
}

// CSIObserveVolumes replaces the volume gauges with counts (keys: issuer, namespace); series of
// pairs no longer present are removed, so alerts never fire for pods that are gone.
func CSIObserveVolumes(counts map[[2]string]CSIVolumeCounts) {
	csiVolumes.Reset()
	csiExpired.Reset()
	csiNextRotation.Reset()
	for k, c := range counts {
		csiVolumes.WithLabelValues(k[0], k[1]).Set(float64(c.Volumes))
		csiExpired.WithLabelValues(k[0], k[1]).Set(float64(c.Expired))
		if !c.NextRotation.IsZero() {
			csiNextRotation.WithLabelValues(k[0], k[1]).Set(float64(c.NextRotation.Unix()))
		}
	}
}

// CSIIssuance counts a token obtained (kind mount or rotation).
func CSIIssuance(issuer, namespace, kind string) {
	csiIssuances.WithLabelValues(issuer, namespace, kind).Inc()
}

// CSIFailure counts a failed attempt (kind mount or rotation).
func CSIFailure(issuer, namespace, kind, reason string) {
	csiFailures.WithLabelValues(issuer, namespace, kind, reason).Inc()
}

// CSIRevocation counts a revocation outcome.
func CSIRevocation(issuer, namespace, outcome string) {
	csiRevocations.WithLabelValues(issuer, namespace, outcome).Inc()
}

// CSIDelivered records the time from Keycloak's answer to the token readable in the volume.
func CSIDelivered(issuer, namespace string, d time.Duration) {
	csiDelivery.WithLabelValues(issuer, namespace).Observe(d.Seconds())
}

// CSIPublished records how long a first publish took.
func CSIPublished(issuer, namespace string, d time.Duration) {
	csiPublish.WithLabelValues(issuer, namespace).Observe(d.Seconds())
}

// CSIRegistered publishes whether the kubelet accepted the plugin's registration.
func CSIRegistered(ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	csiRegistered.Set(v)
}
