// Package metrics exports the operator's Prometheus metrics on controller-runtime's registry
// (served on --metrics-bind-address). Per-resource series carry only namespace and name.
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
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
	revocations = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameRevocations,
		Help: "Revocations on deletion by outcome: revoked, skipped, failed (will retry), abandoned (gave up)."}, []string{"outcome"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(expiry, renewal, ready, failed, requests, duration, revocations)
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
	r := 0.0
	if meta.IsStatusConditionTrue(s.Conditions, authv1alpha1.ConditionReady) {
		r = 1
	}
	ready.WithLabelValues(ns, name).Set(r)
	failed.WithLabelValues(ns, name).Set(float64(s.FailedAttempts))
}

// Forget removes a deleted resource's series.
func Forget(namespace, name string) {
	for _, g := range []*prometheus.GaugeVec{expiry, renewal, ready, failed} {
		g.DeleteLabelValues(namespace, name)
	}
}

// Revocation counts a revocation outcome.
func Revocation(outcome string) { revocations.WithLabelValues(outcome).Inc() }

// Instrument wraps a Keycloak client so that every call is counted and timed.
func Instrument(c keycloak.Client) keycloak.Client { return instrumented{c} }

type instrumented struct{ keycloak.Client }

func observe(grant, endpoint string, start time.Time, err error) {
	outcome := "success"
	if err != nil {
		outcome = string(keycloak.ReasonOf(err))
	}
	requests.WithLabelValues(grant, endpoint, outcome).Inc()
	duration.WithLabelValues(grant, endpoint).Observe(time.Since(start).Seconds())
}

func (i instrumented) ClientCredentials(ctx context.Context, ep keycloak.Endpoint, c keycloak.Credentials, s []string) (*keycloak.Token, error) {
	start := time.Now()
	t, err := i.Client.ClientCredentials(ctx, ep, c, s)
	observe("client_credentials", "token", start, err)
	return t, err
}

func (i instrumented) Refresh(ctx context.Context, ep keycloak.Endpoint, c keycloak.Credentials, rt string, s []string) (*keycloak.Token, error) {
	start := time.Now()
	t, err := i.Client.Refresh(ctx, ep, c, rt, s)
	observe("refresh_token", "token", start, err)
	return t, err
}

func (i instrumented) Password(ctx context.Context, ep keycloak.Endpoint, c keycloak.Credentials, u keycloak.UserCredentials, s []string) (*keycloak.Token, error) {
	start := time.Now()
	t, err := i.Client.Password(ctx, ep, c, u, s)
	observe("password", "token", start, err)
	return t, err
}

func (i instrumented) Revoke(ctx context.Context, ep keycloak.Endpoint, c keycloak.Credentials, tok, hint string) error {
	start := time.Now()
	err := i.Client.Revoke(ctx, ep, c, tok, hint)
	observe(hint, "revoke", start, err)
	return err
}

func (i instrumented) Introspect(ctx context.Context, ep keycloak.Endpoint, c keycloak.Credentials, tok, hint string) (bool, error) {
	start := time.Now()
	ok, err := i.Client.Introspect(ctx, ep, c, tok, hint)
	observe(hint, "introspect", start, err)
	return ok, err
}

func (i instrumented) DeleteSession(ctx context.Context, ep keycloak.Endpoint, admin, sid string, offline bool) (bool, error) {
	start := time.Now()
	ok, err := i.Client.DeleteSession(ctx, ep, admin, sid, offline)
	observe("admin", "session", start, err)
	return ok, err
}
