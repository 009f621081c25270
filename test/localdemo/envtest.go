// The envtest mode: a local API server (envtest's etcd + kube-apiserver from bin/k8s), the
// operator binary on the host, the local Keycloak and the sample resource; the Secret is watched
// through the API. What `make run-local` falls back to where no node can run.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/localdemo/tokenline"
)

// The sample resource points at Keycloak on 127.0.0.1:keycloakPort and at this client Secret.
const samplePath = "config/samples/auth_v1alpha1_mlflowaccesstoken.yaml"

func runEnvtest(duration time.Duration, managerBin string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" || keycloak.HomeFromEnv() == "" {
		return fmt.Errorf("KUBEBUILDER_ASSETS and KEYCLOAK_HOME must be set; run `make run-local`")
	}

	say("Starting a local API server (etcd + kube-apiserver from %s)", os.Getenv("KUBEBUILDER_ASSETS"))
	env := &envtest.Environment{CRDDirectoryPaths: []string{"config/crd/bases"}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the API server: %w", err)
	}
	defer func() { _ = env.Stop(); say("API server stopped") }()
	kubeconfig, _ := filepath.Abs(filepath.Join(localDir, "kubeconfig"))
	if err := os.MkdirAll(filepath.Dir(kubeconfig), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		return err
	}
	say("API server at %s (kubeconfig: %s)", cfg.Host, kubeconfig)
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return err
	}
	// The operator's own namespace, where it keeps the key that seals its Secrets.
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mlflow-token-operator-system"}}); err != nil {
		return err
	}

	realmFile, err := demoRealm()
	if err != nil {
		return err
	}
	say("Starting Keycloak on 127.0.0.1:%d with realm %s (client %s, tokens live %s)", keycloakPort, realmPath, clientID, tokenLifetime)
	kctx, kcancel := context.WithTimeout(context.Background(), 4*time.Minute)
	kc, err := keycloak.Start(kctx, keycloak.Options{Home: keycloak.HomeFromEnv(), Port: keycloakPort, RealmFiles: []string{realmFile}})
	kcancel()
	if err != nil {
		return fmt.Errorf("starting Keycloak: %w", err)
	}
	defer func() { kc.Close(); say("Keycloak stopped") }()
	say("Keycloak ready at %s (admin console: admin/admin)", kc.URL())

	say("Starting the operator: %s --kubeconfig %s", managerBin, kubeconfig)
	op := exec.Command(managerBin, "--kubeconfig", kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--allow-insecure-http") // the local Keycloak serves plain HTTP on 127.0.0.1
	op.SysProcAttr = operatorProcAttr()
	out, _ := op.StdoutPipe()
	op.Stderr = op.Stdout
	if err := op.Start(); err != nil {
		return fmt.Errorf("starting the operator: %w", err)
	}
	go prefix("operator | ", out)
	defer func() { _ = op.Process.Signal(syscall.SIGTERM); _ = op.Wait(); say("Operator stopped") }()

	bg := context.Background()
	if err := c.Create(bg, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "mlflow-operator-client", Namespace: "default"},
		StringData: map[string]string{"client-secret": clientSecret},
	}); err != nil {
		return err
	}
	raw, err := os.ReadFile(samplePath)
	if err != nil {
		return err
	}
	sample := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(raw, &sample.Object); err != nil {
		return err
	}
	sample.SetNamespace("default")
	if err := c.Create(bg, sample, client.FieldValidation("Strict")); err != nil {
		return fmt.Errorf("applying %s: %w", samplePath, err)
	}
	say("Applied %s; watching Secret %q (Ctrl-C to stop and clean up)", samplePath, "mlflow-token")

	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	rotations := watchRotations(ctx, c, sample.GetName())

	say("Deleting the MLflowAccessToken: the operator revokes the token and deletes the Secret")
	obj := &authv1alpha1.MLflowAccessToken{}
	key := types.NamespacedName{Namespace: "default", Name: sample.GetName()}
	_ = c.Delete(bg, sample)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := c.Get(bg, key, obj); apierrors.IsNotFound(err) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	printEvents(c, "default", sample.GetName())
	if s := (&corev1.Secret{}); c.Get(bg, types.NamespacedName{Namespace: "default", Name: "mlflow-token"}, s) == nil {
		say("Secret still exists after deletion")
	} else {
		say("Secret mlflow-token deleted")
	}
	if duration > 0 && rotations < 2 {
		return fmt.Errorf("saw %d rotations in %s, want at least 2", rotations, duration)
	}
	return nil
}

// watchRotations prints the Secret and status whenever the token changes, and returns how many times
// it rotated. Tokens are shown by a short SHA-256 fingerprint, never in clear.
func watchRotations(ctx context.Context, c client.Client, name string) int {
	var last string
	seen := 0
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return max(seen-1, 0)
		case <-tick.C:
		}
		obj := &authv1alpha1.MLflowAccessToken{}
		if err := c.Get(context.Background(), types.NamespacedName{Namespace: "default", Name: name}, obj); err != nil {
			continue
		}
		s := &corev1.Secret{}
		_ = c.Get(context.Background(), types.NamespacedName{Namespace: "default", Name: obj.SecretNameOrDefault()}, s)
		tok := string(s.Data[tokensecret.KeyToken])
		ready := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionReady)
		if tok == "" || tok == last || ready == nil || obj.Status.ExpiresAt == nil {
			continue
		}
		last = tok
		seen++
		verb := "issued "
		if seen > 1 {
			verb = "rotated"
		}
		say("token %s #%d  %s  user=%s  expires=%s  next renewal=%s  Ready=%s/%s",
			verb, seen, tokenline.Fingerprint([]byte(tok)), who(obj), obj.Status.ExpiresAt.Format("15:04:05"),
			obj.Status.RenewalTime.Format("15:04:05"), ready.Status, ready.Reason)
	}
}

func who(obj *authv1alpha1.MLflowAccessToken) string {
	if obj.Status.Token == nil {
		return "?"
	}
	return obj.Status.Token.PreferredUsername
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

func prefix(p string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Println(p + sc.Text())
	}
}
