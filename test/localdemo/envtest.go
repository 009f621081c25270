// The envtest mode: a local API server (envtest's etcd + kube-apiserver from bin/k8s), the
// operator binary on the host, the local Keycloak, and the same issuer and token as the node mode;
// the Secret is watched through the API. What `make run-local` falls back to where no node can run.
// It prints the same lines as the node mode for what the two share; the operator's own log goes
// to a file whose path it prints.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/localdemo/tokenline"
)

func runEnvtest(duration time.Duration, managerBin string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" || keycloak.HomeFromEnv() == "" {
		return fmt.Errorf("KUBEBUILDER_ASSETS and KEYCLOAK_HOME must be set; run `make run-local`")
	}
	begin := commandStart()
	logDir, _ := filepath.Abs(filepath.Join(localDir, "logs"))
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}

	env := &envtest.Environment{CRDDirectoryPaths: []string{"config/crd/bases"}, ErrorIfCRDPathMissing: true}
	t := time.Now()
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the API server: %w", err)
	}
	defer func() { _ = env.Stop(); say("API server stopped") }()
	kubeconfig, _ := filepath.Abs(filepath.Join(localDir, "kubeconfig"))
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		return err
	}
	say("API server (etcd + kube-apiserver on the host) ready in %s: KUBECONFIG=%s", since(t), kubeconfig)
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	bg := context.Background()
	// The operator's namespace (its sealing key; the cluster issuer's client secret, which the
	// team never sees) and the team's.
	for _, ns := range []string{operatorNS, demoNS} {
		if err := c.Create(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	if err := c.Create(bg, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: clientID + "-client", Namespace: operatorNS},
		StringData: map[string]string{"client-secret": clientSecret},
	}); err != nil {
		return err
	}

	realmFile, err := demoRealm()
	if err != nil {
		return err
	}
	kctx, kcancel := context.WithTimeout(ctx, 4*time.Minute)
	kc, err := keycloak.Start(kctx, keycloak.Options{Home: keycloak.HomeFromEnv(), Port: keycloakPort, RealmFiles: []string{realmFile}})
	kcancel()
	if err != nil {
		return fmt.Errorf("starting Keycloak: %w", err)
	}
	defer func() { _ = kc.Stop(); say("Keycloak stopped") }()
	say("Keycloak ready %s after the command started: the operator and you reach it at %s (admin console: admin/admin)", since(begin), kc.URL())

	// The operator as the chart runs it (its defaults refuse plain HTTP; the issuer allows it),
	// outside a pod: its namespace comes from POD_NAMESPACE, as the chart sets it.
	logPath := filepath.Join(logDir, "operator.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	op := exec.Command(managerBin, "--kubeconfig", kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address=0")
	op.Env = append(os.Environ(), "POD_NAMESPACE="+operatorNS)
	op.Stdout, op.Stderr = logFile, logFile
	op.SysProcAttr = operatorProcAttr()
	if err := op.Start(); err != nil {
		return fmt.Errorf("starting the operator: %w", err)
	}
	say("Operator %s running on the host (pid %d); its log: %s", managerBin, op.Process.Pid, logPath)
	defer func() { _ = op.Process.Signal(syscall.SIGTERM); _ = op.Wait(); say("Operator stopped") }()

	o := &objects{c: c, kcURL: kc.URL(), secrets: watchSecret(bg, cs, demoNS, secretName)}
	if err := o.createIssuerAndToken(ctx); err != nil {
		if o.tokenSet {
			_ = o.deleteToken(bg)
		}
		return err
	}
	say("Watching Secret %s/%s (Ctrl-C to stop and clean up)", demoNS, secretName)

	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	rotations := watchRotations(ctx, o)
	if err := o.deleteToken(bg); err != nil {
		return err
	}
	if duration > 0 && rotations < 2 {
		return fmt.Errorf("saw %d rotations in %s, want at least 2 (the operator's log: %s)", rotations, duration, logPath)
	}
	return nil
}

// watchRotations prints each new token the Secret receives, until ctx ends, and returns how many
// there were after the first. Tokens are shown by a fingerprint, never in clear.
func watchRotations(ctx context.Context, o *objects) int {
	last, _ := o.secrets.latest()
	rotations := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return rotations
		case <-tick.C:
		}
		token, exp := o.secrets.latest()
		if len(token) == 0 || string(token) == string(last) {
			continue
		}
		last = token
		rotations++
		renewal := "?"
		tok := &authv1alpha1.MLflowAccessToken{}
		if o.c.Get(context.Background(), client.ObjectKey{Namespace: demoNS, Name: tokenName}, tok) == nil && tok.Status.RenewalTime != nil {
			renewal = tok.Status.RenewalTime.Local().Format("15:04:05")
		}
		say("rotation %d: Secret %s holds token %s (expires %s), renewal due %s",
			rotations, secretName, tokenline.Fingerprint(token), exp.Local().Format("15:04:05"), renewal)
	}
}

// printEvents prints the revocation events of the named MLflowAccessToken.
func printEvents(c client.Client, ns, name string) {
	var evs corev1.EventList
	if err := c.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
		return
	}
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == name && (e.Reason == "Revoked" || strings.HasPrefix(e.Reason, "Revocation")) {
			say("event %s: %s", e.Reason, e.Message)
		}
	}
}
