package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/csinode"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/manager"
)

// version is the VendorVersion the node plugin reports (the image's version; -ldflags may set it).
var version = "v0.2.0-alpha.0"

// runCSINode is `manager csi-node`: the CSI node plugin (a DaemonSet of the chart with
// csiDriver.enabled), in the operator's image. Flags and wiring only: the logic is in
// internal/csinode.
func runCSINode(args []string) int {
	fs := flag.NewFlagSet("csi-node", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: manager csi-node [flags]\n\nThe CSI node plugin: per-pod MLflow tokens minted with each pod's own service-account identity, without a Secret.")
		fs.PrintDefaults()
	}
	o := csinode.Options{MetricsAddr: ":8443", MetricsSecure: true, ProbeAddr: ":8081", Version: version}
	o.KeycloakLimits = manager.Defaults().KeycloakLimits
	var allowedHosts string
	fs.StringVar(&o.DriverName, "driver-name", csinode.DefaultDriverName, "The CSI driver's name, as the CSIDriver object and the pods' volumes name it.")
	fs.StringVar(&o.NodeID, "node-id", os.Getenv("NODE_NAME"), "This node's name (default $NODE_NAME).")
	fs.StringVar(&o.KubeletRootDir, "kubelet-root-dir", "/var/lib/kubelet", "The kubelet's --root-dir: the plugin serves its sockets under plugins/ and plugins_registry/ there and keeps its volume records under plugins/<driver>/volumes (root only).")
	fs.StringVar(&o.ClusterResourceNamespace, "cluster-resource-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the ConfigMaps that ClusterKeycloakIssuers' ca.configMapRef names (the operator's; default $POD_NAMESPACE).")
	fs.BoolVar(&o.Guardrails.AllowInsecureHTTP, "allow-insecure-http", false, "Let every issuer use plain http:// Keycloak URLs (as the operator's flag). Without it, only ClusterKeycloakIssuers with allowInsecureHTTP may.")
	fs.StringVar(&allowedHosts, "allowed-keycloak-hosts", "", "Comma-separated Keycloak hosts the plugin may talk to (as the operator's flag). Default: any.")
	fs.DurationVar(&o.KeycloakTimeout, "keycloak-timeout", csinode.DefaultKeycloakTimeout, "Timeout of one exchange with Keycloak.")
	fs.DurationVar(&o.Backoff.Initial, "min-retry-interval", 2*time.Second, "Wait after the first failed rotation of a volume; doubles per failure, at most a quarter of the token's remaining life.")
	fs.DurationVar(&o.Backoff.Max, "max-retry-interval", 5*time.Minute, "Longest wait between two failed attempts for one volume.")
	fs.DurationVar(&o.Backoff.MaxTransient, "max-retry-interval-without-token", 30*time.Second, "Longest wait between attempts that failed for a reason that can pass (Keycloak unreachable) once a volume's token has expired.")
	fs.DurationVar(&o.SweepInterval, "sweep-interval", time.Minute, "How often volumes whose pod ended without an unpublish are looked for (their tokens are revoked).")
	fs.Float64Var(&o.KeycloakLimits.QPS, "keycloak-qps", o.KeycloakLimits.QPS, "Most requests per second to all Keycloaks together from this node (0: unlimited).")
	fs.IntVar(&o.KeycloakLimits.Burst, "keycloak-burst", o.KeycloakLimits.Burst, "Burst above --keycloak-qps.")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "Address of the metrics endpoint; 0 disables it.")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", o.MetricsSecure, "Serve metrics over HTTPS to callers the API server authenticates and authorizes (as the operator's).")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "Address of the /healthz and /readyz probes.")
	config.RegisterFlags(fs)
	zopts := zap.Options{}
	zopts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Guardrails.AllowedHosts = splitList(allowedHosts)
	ctrl.SetLogger(manager.SafeLogger(zap.New(zap.UseFlagOptions(&zopts))))
	log := ctrl.Log.WithName("csi-node")
	if o.NodeID == "" {
		log.Error(nil, "No node name: set --node-id or $NODE_NAME (the downward API's spec.nodeName)")
		return 2
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "No Kubernetes configuration")
		return 1
	}
	if err := csinode.Run(ctrl.SetupSignalHandler(), cfg, o, log); err != nil {
		log.Error(err, "The CSI node plugin stopped with an error")
		return 1
	}
	return 0
}
