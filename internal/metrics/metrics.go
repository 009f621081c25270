// Package metrics exports the operator's Prometheus metrics on controller-runtime's registry
// (served on --metrics-bind-address). Per-resource series carry only namespace and name.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
)

// Metric names, also used by config/prometheus and the Grafana dashboard.
const (
	NameExpiry           = "mlflow_token_expiry_timestamp_seconds"
	NameRenewal          = "mlflow_token_renewal_timestamp_seconds"
	NameReady            = "mlflow_token_ready"
	NameFailedAttempts   = "mlflow_token_failed_attempts"
	NameKeycloakRequests = "mlflow_token_keycloak_requests_total"
	NameKeycloakDuration = "mlflow_token_keycloak_request_duration_seconds"
	NameRevocations      = "mlflow_token_revocations_total"
	NameChainExpiry      = "mlflow_token_refresh_chain_expiry_timestamp_seconds"
	NameSATokenRequests  = "mlflow_token_serviceaccount_token_requests_total"
	NameIssuerReady      = "mlflow_token_issuer_ready"
	NameSuperseded       = "mlflow_token_superseded_revocations_total"
)

var (
	expiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameExpiry,
		Help: "Unix time at which the token in the resource's Secret expires."}, []string{"namespace", "name"})
	renewal = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameRenewal,
		Help: "Unix time of the next renewal attempt (scheduled renewal, or retry after a failure)."}, []string{"namespace", "name"})
	ready = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameReady,
		Help: "1 when the resource's Secret holds a valid token (condition Ready=True), else 0."}, []string{"namespace", "name"})
	failed = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameFailedAttempts,
		Help: "Consecutive failed attempts to obtain a token (0 after a success)."}, []string{"namespace", "name"})
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameKeycloakRequests,
		Help: "Calls to Keycloak by grant, endpoint and outcome (success or the failure reason)."}, []string{"grant", "endpoint", "outcome"})
	duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: NameKeycloakDuration,
		Help: "Latency of calls to Keycloak.", Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15}}, []string{"grant", "endpoint"})
	chainExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameChainExpiry,
		Help: "Unix time at which the resource's refresh chain ends unless renewed, by grant: a RefreshToken grant then needs a new bootstrap token from a person; a Password grant logs in again."}, []string{"namespace", "name", "grant"})
	saTokenRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameSATokenRequests,
		Help: "TokenRequests for service-account tokens that authenticate Keycloak clients (federated client authentication), by outcome."}, []string{"outcome"})
	issuerReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameIssuerReady,
		Help: "1 when the issuer's realm answered its last check (condition Ready=True), else 0."}, []string{"kind", "namespace", "name"})
	revocations = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameRevocations,
		Help: "Revocations on deletion by outcome: revoked, skipped, failed (will retry), abandoned (gave up)."}, []string{"outcome"})
	superseded = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameSuperseded,
		Help: "Revocations of access tokens a rotation replaced (spec.revocation.revokeSuperseded), by outcome: revoked, failed (will retry), expired (expired before it could be revoked)."}, []string{"outcome"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(expiry, renewal, ready, failed, chainExpiry, saTokenRequests, issuerReady, requests, duration, revocations, superseded)
}

// Observe publishes a resource's status.
func Observe(obj *authv1alpha1.MLflowAccessToken) {
	ns, name := obj.Namespace, obj.Name
	s := obj.Status
	if s.ExpiresAt != nil {
		expiry.WithLabelValues(ns, name).Set(float64(s.ExpiresAt.Unix()))
	}
	if s.RenewalTime != nil {
		renewal.WithLabelValues(ns, name).Set(float64(s.RenewalTime.Unix()))
	}
	chainExpiry.DeletePartialMatch(prometheus.Labels{"namespace": ns, "name": name})
	if s.RefreshChainExpiresAt != nil {
		chainExpiry.WithLabelValues(ns, name, string(obj.Spec.Grant.Type)).Set(float64(s.RefreshChainExpiresAt.Unix()))
	}
	r := 0.0
	if meta.IsStatusConditionTrue(s.Conditions, authv1alpha1.ConditionReady) {
		r = 1
	}
	ready.WithLabelValues(ns, name).Set(r)
	failed.WithLabelValues(ns, name).Set(float64(s.FailedAttempts))
	observeMLflow(obj)
}

// Forget removes a deleted resource's series.
func Forget(namespace, name string) {
	for _, g := range []*prometheus.GaugeVec{expiry, renewal, ready, failed, mlflowAccepted} {
		g.DeleteLabelValues(namespace, name)
	}
	chainExpiry.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "name": name})
}

// Revocation counts a revocation outcome.
func Revocation(outcome string) { revocations.WithLabelValues(outcome).Inc() }

// SupersededRevocation counts the outcome of revoking a superseded token.
func SupersededRevocation(outcome string) { superseded.WithLabelValues(outcome).Inc() }

// ObserveKeycloak counts and times one call to Keycloak; it is keycloak.Options.Observe.
func ObserveKeycloak(op keycloak.Op, took time.Duration, err error) {
	outcome := "success"
	if err != nil {
		outcome = string(keycloak.ReasonOf(err))
	}
	requests.WithLabelValues(op.Grant, op.Endpoint, outcome).Inc()
	duration.WithLabelValues(op.Grant, op.Endpoint).Observe(took.Seconds())
}

// ServiceAccountTokenRequest counts a TokenRequest by outcome (success, error).
func ServiceAccountTokenRequest(outcome string) { saTokenRequests.WithLabelValues(outcome).Inc() }

// IssuerReady publishes an issuer's readiness (namespace is empty for a ClusterKeycloakIssuer).
func IssuerReady(kind, namespace, name string, ready bool) {
	v := 0.0
	if ready {
		v = 1
	}
	issuerReady.WithLabelValues(kind, namespace, name).Set(v)
}

// ForgetIssuer removes a deleted issuer's series.
func ForgetIssuer(kind, namespace, name string) { issuerReady.DeleteLabelValues(kind, namespace, name) }

// NameMLflowAccepted is the per-resource gauge of the MLflowAccepted condition.
const NameMLflowAccepted = "mlflow_token_mlflow_accepted"

var mlflowAccepted = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameMLflowAccepted,
	Help: "1 when MLflow accepted the resource's token (condition MLflowAccepted=True), 0 when it rejected it (False); absent while unknown or when no tracking URI is set."}, []string{"namespace", "name"})

func init() { ctrlmetrics.Registry.MustRegister(mlflowAccepted) }

// observeMLflow publishes the MLflowAccepted condition: 1 or 0 for an answer, no series without one
// (an unanswered check is not a rejection, and a rate over "0" must mean MLflow said no).
func observeMLflow(obj *authv1alpha1.MLflowAccessToken) {
	switch c := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionMLflowAccepted); {
	case c != nil && c.Status == metav1.ConditionTrue:
		mlflowAccepted.WithLabelValues(obj.Namespace, obj.Name).Set(1)
	case c != nil && c.Status == metav1.ConditionFalse:
		mlflowAccepted.WithLabelValues(obj.Namespace, obj.Name).Set(0)
	default:
		mlflowAccepted.DeleteLabelValues(obj.Namespace, obj.Name)
	}
}
