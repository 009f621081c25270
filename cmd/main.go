// Command manager runs the MLflowAccessToken operator. Flags and wiring only.
package main

import (
	"flag"
	"os"
	"time"

	// Mozilla's CA roots, used only when the system has none: the operator image has no
	// /etc/ssl, and the operator talks HTTPS to Keycloak.
	_ "golang.org/x/crypto/x509roots/fallback"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/manager"
)

func main() {
	// Subcommands run by the Helm chart's hooks (cmd/subcommands.go).
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "uninstall":
			os.Exit(runUninstall(os.Args[2:]))
		case "probe":
			os.Exit(runProbe(os.Args[2:]))
		case "csi-node":
			os.Exit(runCSINode(os.Args[2:]))
		}
	}
	o := manager.Defaults()
	var qps float64
	flag.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "Address of the metrics endpoint; 0 disables it.")
	flag.BoolVar(&o.MetricsSecure, "metrics-secure", o.MetricsSecure, "Serve metrics over HTTPS to callers that the API server authenticates and authorizes for GET /metrics (a ServiceAccount bound to the metrics-reader ClusterRole); false: plain HTTP to anyone who can reach the port.")
	flag.StringVar(&o.MetricsCertDir, "metrics-cert-dir", "", "Directory with tls.crt and tls.key for the metrics endpoint (empty: a self-signed certificate).")
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
	flag.DurationVar(&o.Reconciler.Backoff.MaxTransient, "max-retry-interval-without-token", o.Reconciler.Backoff.MaxTransient, "Longest wait between two attempts that failed for a reason that can pass on its own (Keycloak unreachable, a timeout) while the resource has no valid token: it recovers this soon after Keycloak is back.")
	flag.BoolVar(&o.Reconciler.VerifySessionRevocation, "verify-session-revocation", false, "At every deletion, check with Keycloak's admin API that the session ended, and delete it if not (the client's service account needs realm-management view-users and manage-users).")
	flag.DurationVar(&o.Reconciler.OfflineIdleTimeout, "offline-idle-timeout", o.Reconciler.OfflineIdleTimeout, "The realms' offline session idle timeout: the end of an offline refresh chain when Keycloak reports none.")
	flag.DurationVar(&o.Reconciler.RefreshChainWarning, "refresh-chain-warning", o.Reconciler.RefreshChainWarning, "RefreshChainExpiring turns True this long before a RefreshToken grant's chain ends.")
	flag.Float64Var(&o.KeycloakLimits.QPS, "keycloak-qps", o.KeycloakLimits.QPS, "Most requests per second to all Keycloaks together (0: unlimited).")
	flag.IntVar(&o.KeycloakLimits.Burst, "keycloak-burst", o.KeycloakLimits.Burst, "Burst above --keycloak-qps.")
	flag.Float64Var(&o.KeycloakLimits.PerHostQPS, "keycloak-qps-per-host", o.KeycloakLimits.PerHostQPS, "Most requests per second to one Keycloak (base URL) (0: unlimited).")
	flag.IntVar(&o.KeycloakLimits.PerHostBurst, "keycloak-burst-per-host", o.KeycloakLimits.PerHostBurst, "Burst above --keycloak-qps-per-host.")
	flag.IntVar(&o.KeycloakLimits.PerHostInFlight, "keycloak-max-in-flight-per-host", 0, "Most requests in flight to one Keycloak (0: half of --concurrency): a Keycloak that does not answer holds at most this many workers, and after two timeouts in a row its requests fail at once for a cool-down (5 s doubling to 15 s) before one probes it again.")
	// MLflow acceptance check.
	flag.BoolVar(&o.CheckMLflow, "mlflow-check", o.CheckMLflow, "After each new token of a resource with spec.mlflow.trackingURI, ask MLflow whether it accepts it (condition MLflowAccepted); off: no requests to MLflow and no condition.")
	flag.Float64Var(&o.MLflowCheck.QPS, "mlflow-check-qps", o.MLflowCheck.QPS, "Most requests per second to MLflow servers, all together, for --mlflow-check (0: unlimited).")
	flag.IntVar(&o.MLflowCheck.Burst, "mlflow-check-burst", o.MLflowCheck.Burst, "Burst above --mlflow-check-qps.")
	flag.DurationVar(&o.MLflowCheck.Timeout, "mlflow-check-timeout", o.MLflowCheck.Timeout, "Timeout of one request to MLflow for --mlflow-check.")
	var namespaces, allowedHosts, allowedMLflowHosts string
	flag.StringVar(&namespaces, "namespaces", "", "Comma-separated namespaces to watch (default: all). The operator then needs permissions only in these namespaces.")
	flag.StringVar(&o.StateKeySecret, "state-key-secret", o.StateKeySecret, "Secret in the operator's namespace holding the key that seals what the operator writes into tenants' Secrets (created at the first start). Deleting it makes every token be issued anew once and every refresh chain need a new bootstrap token.")
	flag.StringVar(&o.Reconciler.ClusterResourceNamespace, "cluster-resource-namespace", "", "Namespace of the Secrets and ConfigMaps that ClusterKeycloakIssuers reference (default: the operator's own, $POD_NAMESPACE).")
	flag.BoolVar(&o.Reconciler.Guardrails.AllowInsecureHTTP, "allow-insecure-http", false, "Let every resource use plain http:// Keycloak URLs: credentials and tokens then cross the network in clear text. Without it, only ClusterKeycloakIssuers with allowInsecureHTTP may.")
	flag.StringVar(&allowedHosts, "allowed-keycloak-hosts", "", "Comma-separated Keycloak hosts the operator may talk to: exact host names, or suffixes beginning with a dot (.example.com). Default: any. No request leaves for any other host.")
	flag.StringVar(&allowedMLflowHosts, "allowed-mlflow-hosts", "", "Comma-separated MLflow hosts the acceptance check (--mlflow-check) may send tokens to, in the forms of --allowed-keycloak-hosts. Default: any. A tracking URI on another host is not checked (MLflowAccepted=Unknown, reason CheckNotAllowed).")
	flag.DurationVar(&o.IssuerRecheckInterval, "issuer-recheck-interval", 5*time.Minute, "How often issuers' realms are checked again (failing ones ten times as often, at least every 30 s).")
	flag.DurationVar(&o.Reconciler.ServiceAccountTokenLifetime, "serviceaccount-token-lifetime", o.Reconciler.ServiceAccountTokenLifetime, "Lifetime asked for the service-account tokens that authenticate clients (10m to 1h: Kubernetes' minimum, Keycloak's maximum); each is reused for two thirds of it.")
	// Delivery of new tokens to running pods (internal/nudge).
	flag.BoolVar(&o.NudgePods, "nudge-consumer-pods", o.NudgePods, "After each rotation, nudge the pods labelled auth.mlflow-token-operator.io/consumer=true that mount the Secret (an annotation patch, no restart), so that their kubelet writes the new token at once instead of at its next periodic sync (up to 90 s). Needs RBAC to list, watch and patch pods.")
	flag.Float64Var(&o.Nudge.QPS, "nudge-qps", o.Nudge.QPS, "Most pod nudges per second, all resources together (0: unlimited).")
	flag.IntVar(&o.Nudge.Burst, "nudge-burst", o.Nudge.Burst, "Burst above --nudge-qps.")
	flag.DurationVar(&o.KubeletSyncFrequency, "kubelet-sync-frequency", time.Minute, "The kubelet syncFrequency of the cluster's nodes: pods that are not nudged receive a new token up to 1.5 times this late (condition DeliveryAtRisk).")
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse()
	o.QPS = float32(qps)
	o.Namespaces = splitList(namespaces)
	o.Reconciler.Guardrails.AllowedHosts = splitList(allowedHosts)
	o.Reconciler.Guardrails.AllowedMLflowHosts = splitList(allowedMLflowHosts)

	ctrl.SetLogger(manager.SafeLogger(zap.New(zap.UseFlagOptions(&zopts))))
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
