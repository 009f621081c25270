package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/probe"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/uninstall"
)

// Subcommands that the Helm chart runs as hooks with the operator's image (which has no shell):
// flags and wiring only, the logic is in internal/uninstall and internal/probe.

// runUninstall is `manager uninstall`: the chart's pre-delete hook.
func runUninstall(args []string) int {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: manager uninstall [flags]\n\nCleans up the operator's MLflowAccessTokens before the operator is uninstalled.")
		fs.PrintDefaults()
	}
	mode := fs.String("mode", string(uninstall.ModeRevoke), `"revoke": delete every MLflowAccessToken and wait until the running operator has revoked its token; "orphan": stop the operator and remove its finalizer, keeping resources and tokens (for a re-install).`)
	timeout := fs.Duration("timeout", 4*time.Minute, "How long to wait for everything. In revoke mode, what is not revoked by then loses its finalizer without revocation, and the command fails naming it. Keep it under the --timeout of helm uninstall (5m by default).")
	namespaces := fs.String("namespaces", "", "Comma-separated namespaces the operator watches (default: all).")
	deployment := fs.String("operator-deployment", "", "namespace/name of the operator's Deployment, which orphan mode scales to zero (and waits for its pods to go) before removing finalizers.")
	config.RegisterFlags(fs)
	zopts := zap.Options{StacktraceLevel: zapcore.PanicLevel} // a failed hook's log is read by people
	zopts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))
	log := ctrl.Log.WithName("uninstall")

	o := uninstall.Options{Timeout: *timeout, Namespaces: splitList(*namespaces)}
	var err error
	if o.Mode, err = uninstall.ParseMode(*mode); err != nil {
		log.Error(err, "Bad --mode")
		return 2
	}
	if *deployment != "" {
		ns, name, ok := strings.Cut(*deployment, "/")
		if !ok || ns == "" || name == "" {
			log.Error(errors.New("want namespace/name"), "Bad --operator-deployment", "value", *deployment)
			return 2
		}
		o.OperatorDeployment = types.NamespacedName{Namespace: ns, Name: name}
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "No Kubernetes configuration")
		return 1
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		log.Error(err, "Unable to create a Kubernetes client")
		return 1
	}
	log.Info("Cleaning up before the operator is uninstalled", "mode", o.Mode, "timeout", o.Timeout, "namespaces", o.Namespaces)
	if _, err := uninstall.Run(ctrl.SetupSignalHandler(), c, o, log); err != nil {
		log.Error(err, "Clean-up incomplete")
		return 1
	}
	return 0
}

// runProbe is `manager probe URL...`: the chart's `helm test`.
func runProbe(args []string) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: manager probe [flags] URL...\n\nWaits until every URL answers 200 (a /metrics URL: with Prometheus metrics).")
		fs.PrintDefaults()
	}
	timeout := fs.Duration("timeout", time.Minute, "How long to keep trying.")
	tokenFile := fs.String("bearer-token-file", "", "Send the token in this file as a bearer token (the metrics endpoint with --metrics-secure).")
	insecure := fs.Bool("insecure-skip-tls-verify", false, "Do not verify the endpoint's certificate (the metrics endpoint's own is self-signed).")
	zopts := zap.Options{StacktraceLevel: zapcore.PanicLevel} // a failed hook's log is read by people
	zopts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))
	log := ctrl.Log.WithName("probe")
	ctx, cancel := contextWithTimeout(*timeout)
	defer cancel()
	po := probe.Options{InsecureSkipVerify: *insecure}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			log.Error(err, "Cannot read the bearer token")
			return 1
		}
		po.BearerToken = strings.TrimSpace(string(b))
	}
	if err := probe.Check(ctx, fs.Args(), po, log); err != nil {
		log.Error(err, "Probe failed")
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctrl.SetupSignalHandler(), d)
}
