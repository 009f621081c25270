// Package manager wires the operator: scheme, cache, reconciler. cmd/main.go, the local demo
// and the integration tests all build the operator through New, so they run the same thing.
package manager

import (
	"context"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
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
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metricsauth"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/mlflowcheck"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/nudge"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/objectwatch"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/seal"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// Options are the operator's tunables; cmd/main.go fills them from flags.
type Options struct {
	MetricsAddr string
	// MetricsSecure serves metrics over HTTPS, to callers the API server authenticates
	// (TokenReview) and authorizes for GET /metrics (SubjectAccessReview): controller-runtime's
	// filters, as kubebuilder scaffolds them. MetricsCertDir holds tls.crt and tls.key (empty or
	// missing: a self-signed certificate).
	MetricsSecure           bool
	MetricsCertDir          string
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
	// Reconciler are the reconciler's tunables (timeouts, backoff, revocation).
	Reconciler controllers.Config
	// Namespaces restricts the operator to these namespaces (empty: all). Then it needs
	// permissions only there (Roles instead of a ClusterRole).
	Namespaces []string
	// IssuerRecheckInterval is how often issuers are checked again (zero: 5 minutes).
	IssuerRecheckInterval time.Duration
	// KeycloakLimits bound the request rate to Keycloak.
	KeycloakLimits keycloak.Limits
	// Keycloak replaces the gocloak-backed client (tests script it).
	Keycloak keycloak.Client
	// KeycloakObserver, when set, sees every call to Keycloak after the metrics do (tests count
	// calls with it).
	KeycloakObserver func(op keycloak.Op, took time.Duration, err error)
	// SkipNameValidation allows several managers in one process (tests that restart the operator).
	SkipNameValidation bool
	// StateKeySecret names the Secret, in the operator's namespace, that holds the key sealing
	// what the operator writes into tenants' Secrets (internal/seal); created at the first start.
	StateKeySecret string

	// CheckMLflow: after a new token, ask the resource's MLflow whether it accepts it (condition
	// MLflowAccepted). MLflowCheck tunes the checks (rate, timeout, workers).
	CheckMLflow bool
	MLflowCheck mlflowcheck.Options
	// NudgePods: after each rotation, nudge the labelled consumer pods (Nudge: its rate limit), so
	// that they get the new token at once; KubeletSyncFrequency of the nodes, for DeliveryAtRisk.
	NudgePods            bool
	Nudge                nudge.Options
	KubeletSyncFrequency time.Duration
}

// Defaults returns the options cmd/main.go starts from.
func Defaults() Options {
	return Options{
		MetricsAddr:    ":8443",
		MetricsSecure:  true,
		ProbeAddr:      ":8081",
		Concurrency:    4,
		QPS:            50,
		Burst:          100,
		Reconciler:     controllers.DefaultConfig(),
		StateKeySecret: "mlflow-token-operator-state-key",
		KeycloakLimits: keycloak.Limits{QPS: 100, Burst: 100, PerHostQPS: 50, PerHostBurst: 50},
		CheckMLflow:    true,
		MLflowCheck:    mlflowcheck.DefaultOptions(),
		NudgePods:      true,
		Nudge:          nudge.DefaultOptions(),
	}
}

// New builds a manager running the MLflowAccessToken controller.
func New(cfg *rest.Config, o Options) (ctrl.Manager, error) {
	cfg = rest.CopyConfig(cfg)
	if o.QPS > 0 {
		cfg.QPS, cfg.Burst = o.QPS, o.Burst
	}
	if o.Reconciler.ClusterResourceNamespace == "" {
		o.Reconciler.ClusterResourceNamespace = OwnNamespace()
	}
	keys, err := loadKeys(cfg, o)
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme.New(),
		Metrics:                 metricsOptions(o),
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        "mlflow-token-operator.auth.mlflow-token-operator.io",
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// A graceful stop hands the Lease over at once instead of making the standby wait out the
		// lease duration (15.9–17.8 s measured on a real node without this). It is safe only if
		// nothing reconciles after the release: the manager stops its controllers first, waiting
		// up to GracefulShutdownTimeout for in-flight reconciles (a refresh redemption included),
		// then releases the Lease, and cmd/main.go exits as soon as Start returns. The pod's
		// terminationGracePeriodSeconds (30) leaves room for that wait.
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       ptr.To(20 * time.Second),
		LeaseDuration:                 nonZero(o.LeaseDuration),
		RenewDeadline:                 nonZero(o.RenewDeadline),
		RetryPeriod:                   nonZero(o.RetryPeriod),
		Cache:                         withConsumerPods(cacheOptions(o.Namespaces, keys), o.NudgePods), // nudge.go
	})
	if err != nil {
		return nil, err
	}
	kc := o.Keycloak
	if kc == nil {
		observe := metrics.ObserveKeycloak
		if extra := o.KeycloakObserver; extra != nil {
			observe = func(op keycloak.Op, took time.Duration, err error) {
				metrics.ObserveKeycloak(op, took, err)
				extra(op, took, err)
			}
		}
		limits := o.KeycloakLimits
		if limits.PerHostInFlight <= 0 {
			// Half the workers: a Keycloak that does not answer holds at most half of them; the
			// others renew the tokens of every other Keycloak.
			limits.PerHostInFlight = max(1, o.Concurrency/2)
		}
		kc = keycloak.NewGoCloak(keycloak.Options{Timeout: o.Reconciler.KeycloakTimeout, Limits: limits, Observe: observe})
	}
	// The credentials and CA bundles issuers reference are watched one by one (no cluster-wide
	// Secret cache); a change reaches the issuers' and the tokens' controllers as an event.
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	watched := objectwatch.New(cs)
	if err := mgr.Add(watched); err != nil {
		return nil, err
	}
	recorder := mgr.GetEventRecorder("mlflow-token-operator")
	r := &controllers.MLflowAccessTokenReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  recorder,
		Keycloak:  kc,
		Watched:   watched,
		Seal:      keys,
		Config:    o.Reconciler,
	}
	// Background workers bring a resource back through r.Notify: the nudger when a rotation's
	// nudges are done, the MLflow acceptance check (a leader-only Runnable) when its answer is in.
	if r.Delivery, err = setupDelivery(mgr, o, r.Notify); err != nil { // nudge.go
		return nil, err
	}
	if o.CheckMLflow {
		checker := mlflowcheck.New(o.MLflowCheck, func(_ context.Context, key types.NamespacedName) { r.Notify(key) })
		if err := mgr.Add(checker); err != nil {
			return nil, err
		}
		r.MLflow = checker
	}
	if err := r.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: o.Concurrency, SkipNameValidation: &o.SkipNameValidation, RateLimiter: ErrorRateLimiter()}); err != nil {
		return nil, err
	}
	issuers := make([]*controllers.IssuerReconciler, 0, 2)
	for _, cluster := range []bool{false, true} {
		ir := &controllers.IssuerReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder, Keycloak: kc,
			Watched: watched, Cluster: cluster, RecheckInterval: o.IssuerRecheckInterval, Config: o.Reconciler,
			NoClusterEvents: len(o.Namespaces) > 0}
		if err := ir.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: 2, SkipNameValidation: &o.SkipNameValidation}); err != nil {
			return nil, err
		}
		issuers = append(issuers, ir)
	}
	// A change of a watched credential or CA bundle: the issuers that reference it are checked
	// again, and their tokens reconciled. Called on the watch's goroutine; it reads the cache
	// and queues keys, nothing more.
	watched.OnChange(func(k objectwatch.Key) {
		key := types.NamespacedName{Namespace: k.Namespace, Name: k.Name}
		r.CredentialChanged(context.Background(), key)
		for _, ir := range issuers {
			ir.CredentialChanged(context.Background(), key)
		}
	})
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

// OwnNamespace is the namespace the operator runs in: $POD_NAMESPACE (the chart sets it), else the
// namespace of its service-account token, else mlflow-token-operator-system.
func OwnNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil && len(b) > 0 {
		return strings.TrimSpace(string(b))
	}
	return "mlflow-token-operator-system"
}

// ErrorRateLimiter paces the retries of reconciles that failed with an error: the API server
// was unavailable, or a write lost a race. (Failures a person must act on are not errors: the
// reconciler records them and requeues after its own backoff.)
//
// It is a per-resource exponential backoff from 250 ms to 5 s, and nothing else. controller-
// runtime's default adds a queue-wide token bucket (10/s, burst 100), and so did this operator's
// limiter until it was found to make recovery from an API server outage unbounded: the bucket
// *reserves* a future slot for every failure, and during an outage each resource fails a dozen
// times in its first seconds (5 ms, 10 ms, 20 ms ...), so 60 resources reserved the bucket more
// than a minute ahead; after the API server came back they were still waiting for those slots
// (50.8 s for the last one after a 37 s outage). Per-resource delays alone bring every resource
// back within 5 s of the API server's return, whatever the outage's length. The load a fleet of
// failing resources puts on the API server is bounded by the client's own QPS limit
// (--kube-api-qps), which is where such a limit belongs.
func ErrorRateLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](250*time.Millisecond, 5*time.Second)
}

func nonZero(d time.Duration) *time.Duration {
	if d <= 0 {
		return nil
	}
	return &d
}

// loadKeys reads (or, at the first start, creates) the key that seals the operator's Secrets,
// in the operator's namespace, with a client of its own: the manager's cache needs the key
// before it starts.
func loadKeys(cfg *rest.Config, o Options) (*seal.Keys, error) {
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return seal.Load(ctx, c, o.Reconciler.ClusterResourceNamespace, o.StateKeySecret)
}

// cacheOptions caches only the Secrets that carry the operator's label, not every Secret in the
// cluster, and only the given namespaces when any are named. A label is no proof (anyone who may
// write a Secret can set it), so of a Secret without the operator's seal the cache keeps only a
// stub (tokensecret.CacheTransform): what tenants create costs a few hundred bytes each.
func cacheOptions(namespaces []string, keys *seal.Keys) cache.Options {
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}: {
			Label:     labels.SelectorFromSet(labels.Set{tokensecret.LabelManagedBy: tokensecret.ManagedByValue}),
			Transform: tokensecret.CacheTransform(keys),
		},
	}}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// metricsOptions serve the metrics endpoint: over HTTPS with authentication and authorization
// unless MetricsSecure is off (local runs and tests outside a cluster).
func metricsOptions(o Options) metricsserver.Options {
	m := metricsserver.Options{BindAddress: o.MetricsAddr, SecureServing: o.MetricsSecure}
	if o.MetricsSecure {
		m.CertDir = o.MetricsCertDir
		m.FilterProvider = metricsauth.FilterProvider
	}
	return m
}
