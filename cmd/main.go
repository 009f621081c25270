// Command manager runs the MLflowAccessToken operator. Flags and wiring only.
package main

import (
	"flag"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/controllers"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/renewal"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

func main() {
	var (
		metricsAddr, probeAddr string
		leaderElect            bool
		leaderElectionNS       string
		concurrency            int
		qps                    float64
		burst                  int
		keycloakTimeout        time.Duration
		revocationTimeout      time.Duration
		maxRetryInterval       time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the metrics endpoint; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Use leader election, so that only one replica reconciles.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's).")
	flag.IntVar(&concurrency, "concurrency", 4, "How many MLflowAccessTokens are reconciled in parallel.")
	flag.Float64Var(&qps, "kube-api-qps", 50, "Queries per second to the Kubernetes API server (client-go's default of 5 throttles fleets).")
	flag.IntVar(&burst, "kube-api-burst", 100, "Burst of queries to the Kubernetes API server.")
	flag.DurationVar(&keycloakTimeout, "keycloak-timeout", controllers.DefaultKeycloakTimeout, "Timeout of one request to Keycloak.")
	flag.DurationVar(&revocationTimeout, "revocation-timeout", controllers.DefaultRevocationTimeout, "How long deletion retries revocation before it finishes without it.")
	flag.DurationVar(&maxRetryInterval, "max-retry-interval", renewal.DefaultBackoff.Max, "Longest wait between two failed attempts for one resource.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	setupLog := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(authv1alpha1.AddToScheme(scheme))

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS = float32(qps)
	cfg.Burst = burst

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "mlflow-token-operator.auth.mlflow-token-operator.io",
		LeaderElectionNamespace: leaderElectionNS,
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			// Cache only the Secrets we write, not every Secret in the cluster.
			&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{tokensecret.LabelManagedBy: tokensecret.ManagedByValue})},
		}},
	})
	if err != nil {
		setupLog.Error(err, "Unable to create the manager")
		os.Exit(1)
	}

	r := &controllers.MLflowAccessTokenReconciler{
		Client:            mgr.GetClient(),
		APIReader:         mgr.GetAPIReader(),
		Recorder:          mgr.GetEventRecorder("mlflow-token-operator"),
		Keycloak:          keycloak.NewGoCloak(keycloak.Options{Timeout: keycloakTimeout}),
		Clock:             clock.RealClock{},
		Backoff:           renewal.Backoff{Initial: renewal.DefaultBackoff.Initial, Max: maxRetryInterval},
		KeycloakTimeout:   keycloakTimeout,
		RevocationTimeout: revocationTimeout,
	}
	if err := r.SetupWithManager(mgr, concurrency); err != nil {
		setupLog.Error(err, "Unable to set up the controller")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "Unable to set up the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "Unable to set up the ready check")
		os.Exit(1)
	}

	setupLog.Info("Starting the manager", "concurrency", concurrency, "qps", qps, "burst", burst)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "The manager stopped with an error")
		os.Exit(1)
	}
}
