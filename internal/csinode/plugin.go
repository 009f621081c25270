package csinode

import (
	"context"
	"net/http"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metricsauth"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/objectwatch"
)

// Options are the node plugin's process settings; cmd/ fills them from flags.
type Options struct {
	Config
	// KubeletRootDir is the kubelet's --root-dir: the CSI socket goes to
	// <root>/plugins/<driver>/csi.sock, the registration socket to <root>/plugins_registry/,
	// the volume records to <root>/plugins/<driver>/volumes/.
	KubeletRootDir string
	Version        string
	MetricsAddr    string
	MetricsSecure  bool
	ProbeAddr      string
	KeycloakLimits keycloak.Limits
}

// Run runs the node plugin until ctx ends: the API watches (a controller-runtime manager
// without controllers and without leader election: every node runs its own), the CSI and
// registration sockets, the metrics and health endpoints.
func Run(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) error {
	pluginDir := filepath.Join(o.KubeletRootDir, "plugins", o.DriverName)
	if o.StateDir == "" {
		o.StateDir = filepath.Join(pluginDir, "volumes")
	}
	m := metricsserver.Options{BindAddress: o.MetricsAddr, SecureServing: o.MetricsSecure}
	if o.MetricsSecure {
		m.FilterProvider = metricsauth.FilterProvider
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme.New(), Metrics: m, HealthProbeBindAddress: o.ProbeAddr, Logger: log})
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	cms := objectwatch.New(cs)
	if err := mgr.Add(cms); err != nil {
		return err
	}
	kc := keycloak.NewGoCloak(keycloak.Options{Timeout: o.KeycloakTimeout, Limits: o.KeycloakLimits, Observe: metrics.ObserveKeycloak})
	d, err := New(o.Config, NewAPILookup(mgr.GetCache(), cms), kc, clock.RealClock{}, log.WithName("csi"))
	if err != nil {
		return err
	}
	csiSocket := filepath.Join(pluginDir, "csi.sock")
	regSocket := filepath.Join(o.KubeletRootDir, "plugins_registry", o.DriverName+"-reg.sock")
	serving := make(chan struct{})
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		// Volumes resume before the kubelet can reach the plugin, so a republish or unpublish
		// finds its record.
		d.Start(ctx)
		errs := make(chan error, 2)
		go func() { errs <- d.ServeCSI(ctx, csiSocket, o.Version) }()
		go func() {
			errs <- ServeRegistration(ctx, regSocket, o.DriverName, csiSocket, log.WithName("registration"))
		}()
		close(serving)
		log.Info("Serving", "driver", o.DriverName, "csiSocket", csiSocket, "registrationSocket", regSocket, "volumes", d.count())
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		}
	})); err != nil {
		return err
	}
	ready := func(*http.Request) error {
		select {
		case <-serving:
			return nil
		default:
			return errNotServing
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("serving", ready); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

type notServing struct{}

func (notServing) Error() string { return "the CSI sockets are not served yet" }

var errNotServing = notServing{}

// DefaultKeycloakTimeout bounds one exchange with Keycloak.
const DefaultKeycloakTimeout = 10 * time.Second
