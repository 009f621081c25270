// Package federated pins down, against a real API server and a real Keycloak 26.7, how a
// Keycloak client authenticates with a Kubernetes service-account token instead of a client
// secret (federated client authentication; see test/keycloak/FEDERATED.md).
//
// The API server is its own service-account issuer on https://127.0.0.1:PORT, serves OIDC
// discovery and the JWKS anonymously, and Keycloak trusts its CA (testenv.Options.
// ServiceAccountIssuer). The realm comes from test/keycloak/realm-federated.json; its Kubernetes
// identity provider is created at run time, once the issuer URL is known.
package federated

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// Facts of the realm fixture test/keycloak/realm-federated.json.
const (
	realm   = "federated"
	clientA = "federated-a" // bound to system:serviceaccount:team-a:sa1
	clientB = "federated-b" // bound to system:serviceaccount:team-b:sa1
	nsA     = "team-a"
	nsB     = "team-b"
	saName  = "sa1"
)

var (
	servers *testenv.Servers
	kc      *keycloak.Server
	kube    kubernetes.Interface
	// realmIssuer is the realm's issuer URL: the audience the service-account token must carry.
	realmIssuer string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if err := testenv.Preflight(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	begin := time.Now()
	var err error
	servers, err = testenv.Start(ctx, testenv.Options{
		Keycloak:             keycloak.Options{RealmFiles: []string{filepath.Join("..", "keycloak", "realm-federated.json")}},
		ServiceAccountIssuer: true,
		NamespaceController:  true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer servers.Stop()
	kc = servers.Keycloak
	realmIssuer = kc.URL() + "/realms/" + realm
	if kube, err = kubernetes.NewForConfig(servers.Config); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	if err := kc.ConfigureKubernetesIdP(ctx, realm, keycloak.KubernetesIdP{IssuerURL: servers.IssuerURL}); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	for _, ns := range []string{nsA, nsB} {
		if err := ensureServiceAccount(ctx, ns, saName); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			return 1
		}
	}
	fmt.Fprintf(os.Stderr, "Issuer %s, realm issuer %s; setup took %s\n", servers.IssuerURL, realmIssuer, time.Since(begin).Round(time.Millisecond))
	return m.Run()
}

func ensureServiceAccount(ctx context.Context, ns, name string) error {
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !isAlreadyExists(err) {
		return err
	}
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil && !isAlreadyExists(err) {
		return err
	}
	return nil
}
