// Package cluster runs the operator as users run it: from its own image and Helm chart (and from
// dist/install.yaml), on a real single node (test/node: kubelet, containerd, runc, kube-proxy,
// controller-manager, scheduler), against a real Keycloak and a real MLflow server with
// mlflow-oidc-auth, both listening on the node's HostIP, where pods reach them by IP.
//
// Tests: TestChart (helm install into a restricted namespace, tokens, helm test, helm upgrade to
// two replicas, leader failover by pod deletion and by SIGKILL, training jobs in pods, helm
// uninstall with its revoking hook, namespaces deleted afterwards) and TestInstallYAML (the same
// operator from dist/install.yaml). Each step prints its time; TestMain prints them all at the end.
//
// Needs root, the node's binaries and Debian packages (see test/node), the images
// bin/images/{operator,pause,training-job}.tar (`make images`), bin/tools/helm and kustomize
// (hack/packaging-tools.sh), KEYCLOAK_HOME and MLFLOW_VENV: `make test` provides all of them.
// Without one, the suite fails in one line that names the command to run; it never skips.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/internal/freeport"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/internal/nodesuite"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/mlflowserver"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// The images `make images` builds (hack/images.sh), under the names the chart and the installer
// use by default, so the node runs them without any pull.
var (
	operatorImage = "ghcr.io/mlflow-token-operator/mlflow-token-operator:" + testenv.ImageTag()
	pauseImage    = "localhost/mlflow-token-operator/pause:" + testenv.ImageTag()
	trainingImage = "localhost/mlflow-token-operator/training-job:" + testenv.ImageTag()
)

// EnvVenv names the MLflow virtualenv built by hack/mlflow-venv.sh (the MLflow server runs from it).
const EnvVenv = "MLFLOW_VENV"

var (
	theNode  *node.Node
	cs       kubernetes.Interface // cluster-admin clientset
	k8s      client.Client        // cluster-admin, with the operator's types
	kc       *keycloak.Server
	kcURL    string // Keycloak's HTTPS base URL, as the operator and MLflow use it
	caPEM    []byte // the CA that signed Keycloak's certificate: spec.keycloak.caBundle
	mlflow   *mlflowserver.Server
	helmBin  string
	repoRoot = testenv.RepoRoot()
	times    = &nodesuite.Log{}
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	fail := func(format string, a ...any) int {
		fmt.Printf("FAIL: "+format+"\n", a...)
		return 1
	}
	images, err := preflight()
	if err != nil {
		return fail("%v", err)
	}
	begin := time.Now()
	logDir := filepath.Join(repoRoot, "bin", "cluster-logs")
	_ = os.RemoveAll(logDir)
	theNode, err = node.Start(context.Background(), node.Options{
		SandboxImage: images[0],
		Images:       images[1:],
		LogDir:       logDir,
	})
	if err != nil {
		return fail("%v\n(component logs: %s)", err, logDir)
	}
	t := theNode.Timings()
	times.Step("node start (control plane, node Ready, images imported)", t.Total)
	code := func() int {
		cs = theNode.Client()
		sch := scheme.New()
		utilruntime.Must(apiextensionsv1.AddToScheme(sch))
		if k8s, err = client.New(theNode.RESTConfig(), client.Options{Scheme: sch}); err != nil {
			return fail("%v", err)
		}
		stop, err := startServers(logDir)
		defer stop()
		if err != nil {
			return fail("%v", err)
		}
		times.Step("Keycloak and MLflow start (side by side, after the node)", time.Since(begin)-t.Total)
		code := m.Run()
		if err := theNode.Healthy(); err != nil { // a component that died under the tests fails the suite
			fmt.Printf("FAIL: %v\n", err)
			code = 1
		}
		if code != 0 {
			theNode.DumpLogs(os.Stdout, 30)
			fmt.Printf("Keycloak log: %s\nMLflow log: %s\n", kc.LogPath(), mlflow.LogPath)
		}
		return code
	}()
	if err := theNode.Stop(); err != nil {
		fmt.Printf("FAIL: %v\n", err)
		code = 1
	}
	times.Print(os.Stdout, "cluster", time.Since(begin))
	return code
}

// preflight says in one line what is missing and which command provides it. It returns the
// images to import: the sandbox image first.
func preflight() ([]node.Image, error) {
	helmBin = filepath.Join(repoRoot, "bin", "tools", "helm")
	return nodesuite.Preflight([]nodesuite.Image{
		{File: "pause.tar", Ref: pauseImage, Make: "make images"}, {File: "operator.tar", Ref: operatorImage, Make: "make images"},
		{File: "training-job.tar", Ref: trainingImage, Make: "make images"},
	}, "helm", "kustomize")
}

// startServers starts Keycloak (HTTPS, with a CA of this test run) and MLflow on the node's
// HostIP, side by side. The test process trusts the CA from then on (http.DefaultTransport).
func startServers(logDir string) (stop func(), err error) {
	dir, err := os.MkdirTemp("", "cluster-test-")
	if err != nil {
		return func() {}, err
	}
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		os.RemoveAll(dir)
	}
	host := theNode.HostIP()
	ca, err := newTLSFiles(dir, host)
	if err != nil {
		return stop, err
	}
	caPEM = ca.caPEM
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	pool.AppendCertsFromPEM(caPEM)
	http.DefaultTransport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	realms, err := realmFiles(dir)
	if err != nil {
		return stop, err
	}
	// Ports chosen up front: MLflow's OIDC settings name Keycloak's URL before Keycloak is up
	// (mlflow-oidc-auth fetches the keys only at the first bearer request).
	var ports [3]int
	for i := range ports {
		if ports[i], err = freeport.On(host); err != nil {
			return stop, err
		}
	}
	kcURL = "https://" + net.JoinHostPort(host, strconv.Itoa(ports[1]))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var kcErr, mlErr error
	var kcTime, mlTime time.Duration
	wg.Add(2)
	go func() {
		defer wg.Done()
		t := time.Now()
		kc, kcErr = keycloak.Start(ctx, keycloak.Options{
			Host: host, Port: ports[0], HTTPSPort: ports[1],
			TLSCertFile: ca.certFile, TLSKeyFile: ca.keyFile,
			RealmFiles: realms,
			LogFile:    filepath.Join(logDir, "keycloak.log"),
		})
		kcTime = time.Since(t)
	}()
	go func() {
		defer wg.Done()
		t := time.Now()
		mlflow, mlErr = startMLflow(ctx, host, kcURL, ca.caFile, filepath.Join(logDir, "mlflow.log"))
		mlTime = time.Since(t)
	}()
	wg.Wait()
	if kc != nil {
		stops = append(stops, kc.Close)
	}
	if mlflow != nil {
		stops = append(stops, mlflow.Stop)
	}
	if err := errors.Join(kcErr, mlErr); err != nil {
		return stop, err
	}
	if kc.HTTPSURL() != kcURL {
		return stop, fmt.Errorf("keycloak serves HTTPS at %s, want %s", kc.HTTPSURL(), kcURL)
	}
	fmt.Printf("Keycloak ready at %s in %s; MLflow (mlflow-oidc-auth) ready at %s in %s\n",
		kcURL, kcTime.Round(100*time.Millisecond), mlflow.URL, mlTime.Round(100*time.Millisecond))
	return stop, nil
}
