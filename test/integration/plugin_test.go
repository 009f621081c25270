package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// buildPlugin builds the kubectl plugin from cmd/ into a temp dir.
func buildPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kubectl-mlflow_token")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/kubectl-mlflow_token")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v\n%s", err, out)
	}
	return bin
}

func plugin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, append(args, "--kubeconfig", kubeconfigPath)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl mlflow-token %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// The kubectl plugin against the real API server and Keycloak: renew rotates now and is
// recorded as manual; revoke makes the old token inactive at Keycloak and rotates; inspect
// shows the claims and schedule but never the token.
func TestKubectlPlugin(t *testing.T) {
	bin := buildPlugin(t)
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	create(t, newToken(ns, "cli", func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.RenewBefore = nil
	}))
	obj := waitReady(t, ns, "cli", 30*time.Second)
	first := secretToken(getSecret(t, ns, "cli"))

	out := plugin(t, bin, "renew", "cli", "-n", ns)
	if !strings.Contains(out, "Done: new token") {
		t.Fatalf("renew output: %s", out)
	}
	renewed := get(t, ns, "cli")
	if renewed.Status.LastRenewalRequest == "" || renewed.Status.Rotations <= obj.Status.Rotations {
		t.Errorf("renew not recorded: %+v", renewed.Status)
	}
	second := secretToken(getSecret(t, ns, "cli"))
	if second == first {
		t.Error("renew did not rotate the token")
	}

	out = plugin(t, bin, "revoke", "cli", "-n", ns)
	if !strings.Contains(out, "Done: new token") {
		t.Fatalf("revoke output: %s", out)
	}
	if introspect(t, second) {
		t.Error("the revoked token is still active at Keycloak")
	}
	third := secretToken(getSecret(t, ns, "cli"))
	if third == second || !introspect(t, third) {
		t.Error("revoke did not put a new, active token into the Secret")
	}
	if get(t, ns, "cli").Status.LastRevocationRequest == "" {
		t.Error("revocation request not recorded in status")
	}

	out = plugin(t, bin, "inspect", "cli", "-n", ns)
	for _, want := range []string{"preferred_username:", "service-account-" + clientID, "azp:", "aud:", "Expires:", "Next renewal:", "Ready:", "Manual renewal:", "in "} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	for _, tok := range []string{first, second, third} {
		if strings.Contains(out, tok) || strings.Contains(out, strings.Split(tok, ".")[2]) {
			t.Error("inspect printed a token")
		}
	}
	t.Logf("inspect:\n%s", out)
	deleteAndWait(t, get(t, ns, "cli"), 30*time.Second)
}
