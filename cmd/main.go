// Command manager runs the MLflowAccessToken operator. Flags and wiring only.
package main

import (
	"flag"
	"os"
	"strings"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/manager"
)

func main() {
	o := manager.Defaults()
	var qps float64
	flag.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "Address of the metrics endpoint; 0 disables it.")
	flag.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "Address of the /healthz and /readyz probes.")
	flag.BoolVar(&o.LeaderElection, "leader-elect", false, "Use leader election, so that only one replica reconciles.")
	flag.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's).")
	flag.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "How long a standby waits, after the leader's last renewal, before it takes the Lease: failover takes about this plus one or two --leader-elect-retry-period.")
	flag.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "How long the leader keeps trying to renew the Lease before it gives up leading (less than --leader-elect-lease-duration).")
	flag.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "How often leader election clients retry acquiring or renewing the Lease.")
	flag.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "How many MLflowAccessTokens are reconciled in parallel.")
	flag.Float64Var(&qps, "kube-api-qps", float64(o.QPS), "Queries per second to the Kubernetes API server, per resource type: client-go keeps one token bucket per REST client (Secrets, MLflowAccessTokens, events, leases each have their own), so one busy type cannot starve lease renewals. client-go's default of 5 throttles fleets.")
	flag.IntVar(&o.Burst, "kube-api-burst", o.Burst, "Burst of queries to the Kubernetes API server, per resource type (see --kube-api-qps).")
	flag.DurationVar(&o.Reconciler.KeycloakTimeout, "keycloak-timeout", o.Reconciler.KeycloakTimeout, "Timeout of one exchange with Keycloak.")
	flag.DurationVar(&o.Reconciler.RevocationTimeout, "revocation-timeout", o.Reconciler.RevocationTimeout, "How long deletion retries revocation before it finishes without it (with a Warning event).")
	flag.DurationVar(&o.Reconciler.Backoff.Initial, "min-retry-interval", o.Reconciler.Backoff.Initial, "Wait after the first failed attempt for a resource; doubles per failure.")
	flag.DurationVar(&o.Reconciler.Backoff.Max, "max-retry-interval", o.Reconciler.Backoff.Max, "Longest wait between two failed attempts for one resource.")
	flag.BoolVar(&o.Reconciler.VerifySessionRevocation, "verify-session-revocation", false, "At every deletion, check with Keycloak's admin API that the session ended, and delete it if not (the client's service account needs realm-management view-users and manage-users).")
	flag.DurationVar(&o.Reconciler.OfflineIdleTimeout, "offline-idle-timeout", o.Reconciler.OfflineIdleTimeout, "The realms' offline session idle timeout: the end of an offline refresh chain when Keycloak reports none.")
	flag.DurationVar(&o.Reconciler.RefreshChainWarning, "refresh-chain-warning", o.Reconciler.RefreshChainWarning, "RefreshChainExpiring turns True this long before a RefreshToken grant's chain ends.")
	flag.Float64Var(&o.KeycloakLimits.QPS, "keycloak-qps", o.KeycloakLimits.QPS, "Most requests per second to all Keycloaks together (0: unlimited).")
	flag.IntVar(&o.KeycloakLimits.Burst, "keycloak-burst", o.KeycloakLimits.Burst, "Burst above --keycloak-qps.")
	flag.Float64Var(&o.KeycloakLimits.PerHostQPS, "keycloak-qps-per-host", o.KeycloakLimits.PerHostQPS, "Most requests per second to one Keycloak (base URL) (0: unlimited).")
	flag.IntVar(&o.KeycloakLimits.PerHostBurst, "keycloak-burst-per-host", o.KeycloakLimits.PerHostBurst, "Burst above --keycloak-qps-per-host.")
	// MLflow acceptance check (issue 11 part 5).
	flag.BoolVar(&o.CheckMLflow, "mlflow-check", o.CheckMLflow, "After each new token of a resource with spec.mlflow.trackingURI, ask MLflow whether it accepts it (condition MLflowAccepted); off: no requests to MLflow and no condition.")
	flag.Float64Var(&o.MLflowCheck.QPS, "mlflow-check-qps", o.MLflowCheck.QPS, "Most requests per second to MLflow servers, all together, for --mlflow-check (0: unlimited).")
	flag.IntVar(&o.MLflowCheck.Burst, "mlflow-check-burst", o.MLflowCheck.Burst, "Burst above --mlflow-check-qps.")
	flag.DurationVar(&o.MLflowCheck.Timeout, "mlflow-check-timeout", o.MLflowCheck.Timeout, "Timeout of one request to MLflow for --mlflow-check.")
	var namespaces string
	flag.StringVar(&namespaces, "namespaces", "", "Comma-separated namespaces to watch (default: all). The operator then needs permissions only in these namespaces.")
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse()
	o.QPS = float32(qps)
	for _, ns := range strings.Split(namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			o.Namespaces = append(o.Namespaces, ns)
		}
	}

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))
	setupLog := ctrl.Log.WithName("setup")

	mgr, err := manager.New(ctrl.GetConfigOrDie(), o)
	if err != nil {
		setupLog.Error(err, "Unable to set up the operator")
		os.Exit(1)
	}
	setupLog.Info("Starting the manager", "concurrency", o.Concurrency, "qps", o.QPS, "burst", o.Burst)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "The manager stopped with an error")
		os.Exit(1)
	}
}
