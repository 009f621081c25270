// Package manager wires the operator: scheme, cache, reconciler. cmd/main.go, the local demo
// and the integration tests all build the operator through New, so they run the same thing.
package manager

import (
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	"github.com/mlflow-token-operator/mlflow-token-operator/controllers"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/renewal"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// Options are the operator's tunables; cmd/main.go fills them from flags.
type Options struct {
	MetricsAddr             string
	ProbeAddr               string
	LeaderElection          bool
	LeaderElectionNamespace string
	// Lease timings of the leader election (zero: controller-runtime's 15 s / 10 s / 2 s).
	// A standby takes over about LeaseDuration + one or two RetryPeriods after the leader died.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Concurrency is how many resources are reconciled in parallel.
	Concurrency int
	// QPS and Burst of the Kubernetes client (client-go's defaults of 5/10 throttle fleets).
	QPS   float32
	Burst int
	// KeycloakTimeout bounds one exchange with Keycloak.
	KeycloakTimeout time.Duration
	// RevocationTimeout is how long deletion retries revocation.
	RevocationTimeout time.Duration
	// Backoff after failures.
	Backoff renewal.Backoff
	// VerifySessionRevocation checks with the admin API at every deletion that the session ended.
	VerifySessionRevocation bool
	// OfflineIdleTimeout is the realms' offline session idle timeout (Keycloak's default: 30 days).
	OfflineIdleTimeout time.Duration
	// RefreshChainWarning is how early RefreshChainExpiring warns before a chain ends.
	RefreshChainWarning time.Duration
	// Namespaces restricts the operator to these namespaces (empty: all). Then it needs
	// permissions only there (Roles instead of a ClusterRole).
	Namespaces []string
	// KeycloakLimits bound the request rate to Keycloak.
	KeycloakLimits keycloak.Limits
	// Keycloak replaces the gocloak-backed client (tests wrap it to count calls).
	Keycloak keycloak.Client
	// SkipNameValidation allows several managers in one process (tests that restart the operator).
	SkipNameValidation bool
}

// Defaults returns the options cmd/main.go starts from.
func Defaults() Options {
	return Options{
		MetricsAddr:         ":8080",
		ProbeAddr:           ":8081",
		Concurrency:         4,
		QPS:                 50,
		Burst:               100,
		KeycloakTimeout:     controllers.DefaultKeycloakTimeout,
		RevocationTimeout:   controllers.DefaultRevocationTimeout,
		Backoff:             renewal.DefaultBackoff,
		KeycloakLimits:      keycloak.Limits{QPS: 100, Burst: 100, PerHostQPS: 50, PerHostBurst: 50},
		OfflineIdleTimeout:  controllers.DefaultOfflineIdleTimeout,
		RefreshChainWarning: controllers.DefaultRefreshChainWarning,
	}
}

// New builds a manager running the MLflowAccessToken controller.
func New(cfg *rest.Config, o Options) (ctrl.Manager, error) {
	cfg = rest.CopyConfig(cfg)
	if o.QPS > 0 {
		cfg.QPS, cfg.Burst = o.QPS, o.Burst
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme.New(),
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        "mlflow-token-operator.auth.mlflow-token-operator.io",
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		LeaseDuration:           nonZero(o.LeaseDuration),
		RenewDeadline:           nonZero(o.RenewDeadline),
		RetryPeriod:             nonZero(o.RetryPeriod),
		Cache:                   cacheOptions(o.Namespaces),
	})
	if err != nil {
		return nil, err
	}
	kc := o.Keycloak
	if kc == nil {
		kc = keycloak.NewGoCloak(keycloak.Options{Timeout: o.KeycloakTimeout})
	}
	kc = keycloak.RateLimited(metrics.Instrument(kc), o.KeycloakLimits)
	r := &controllers.MLflowAccessTokenReconciler{
		Client:            mgr.GetClient(),
		APIReader:         mgr.GetAPIReader(),
		Recorder:          mgr.GetEventRecorder("mlflow-token-operator"),
		Keycloak:          kc,
		Backoff:           o.Backoff,
		KeycloakTimeout:   o.KeycloakTimeout,
		RevocationTimeout: o.RevocationTimeout,

		VerifySessionRevocation: o.VerifySessionRevocation,
		OfflineIdleTimeout:      o.OfflineIdleTimeout,
		RefreshChainWarning:     o.RefreshChainWarning,
	}
	// Errors (API server down, conflicts) retry with controller-runtime's exponential backoff,
	// but capped at the operator's own retry cap (at most 30 s) instead of the default 1000 s:
	// after an API server outage, tokens must not expire while their resources wait in the queue.
	errCap := min(o.Backoff.Max, 30*time.Second)
	if errCap <= 0 {
		errCap = 30 * time.Second
	}
	limiter := workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, errCap),
		&workqueue.TypedBucketRateLimiter[reconcile.Request]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
	)
	if err := r.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: o.Concurrency, SkipNameValidation: &o.SkipNameValidation, RateLimiter: limiter}); err != nil {
		return nil, err
	}
	if o.ProbeAddr != "" && o.ProbeAddr != "0" {
		if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
			return nil, err
		}
	}
	return mgr, nil
}

func nonZero(d time.Duration) *time.Duration {
	if d <= 0 {
		return nil
	}
	return &d
}

// cacheOptions caches only the Secrets the operator writes, not every Secret in the cluster,
// and only the given namespaces when any are named.
func cacheOptions(namespaces []string) cache.Options {
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{tokensecret.LabelManagedBy: tokensecret.ManagedByValue})},
	}}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}
