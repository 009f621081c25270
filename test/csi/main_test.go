// Package csi tests the CSI driver of per-pod tokens on a real node (test/node: kubelet,
// containerd, control plane), with the chart installed from the operator's image
// (csiDriver.enabled), a real Keycloak whose Kubernetes identity provider trusts the node's API
// server as service-account issuer, and a real MLflow behind mlflow-oidc-auth. Both listen on the
// node's HostIP, where pods reach them.
//
// TestCSI runs its steps in order (TestMain prints every figure again at the end):
//   - job: a training Job with the CSI volume logs params, metrics and artifacts over more than
//     three token lifetimes; every call succeeds; Keycloak saw its client authenticated as the
//     Job's ServiceAccount;
//   - identities: two pods of two ServiceAccounts get tokens of distinct subjects; a pod whose
//     ServiceAccount has no Keycloak client fails to mount, saying so; a pod in a namespace the
//     issuer does not admit gets nothing and Keycloak sees no request for it;
//   - rotation: readers polling their token file every 2 ms; time from Keycloak's answer (the
//     plugin's log) to the new token read in the pod, p50/p99 over at least 100 rotations; no read
//     of an expired token; the plugin killed in the middle (SIGKILL) and rotations on time after;
//   - revocation: a deleted pod's token inactive at introspection within 2 s; a pod deleted
//     while the plugin is down has its token revoked once the plugin is back;
//   - figures: plugin memory per 100 volumes, publish time added to a pod's start, Keycloak
//     requests per pod and token lifetime;
//   - apiserver: no token of the realm anywhere in the API server (every object of every
//     listable resource, Secrets included).
//
// Needs root, the node's binaries and Debian packages (test/node), the images
// bin/images/{operator,pause,training-job,tokenwatch}.tar, bin/tools/helm, KEYCLOAK_HOME and
// MLFLOW_VENV: `make test` provides all of them. Without one the suite fails in one line naming
// the command to run; it never skips. Run it alone with
//
//	flock /tmp/realnode.lock go test -count=1 -v -timeout 30m ./test/csi/
package csi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// The images `make images` (and hack/images.sh tokenwatch) build, under the names the chart uses.
var (
	operatorImage   = "ghcr.io/mlflow-token-operator/mlflow-token-operator:" + testenv.ImageTag()
	pauseImage      = "localhost/mlflow-token-operator/pause:" + testenv.ImageTag()
	trainingImage   = "localhost/mlflow-token-operator/training-job:" + testenv.ImageTag()
	tokenwatchImage = "localhost/mlflow-token-operator/tokenwatch:" + testenv.ImageTag()
)

// The node's API server issues service-account tokens as this (test/node), which Keycloak's
// identity provider must name verbatim.
const saIssuer = "https://kubernetes.default.svc.cluster.local"

var (
	theNode  *node.Node
	cs       kubernetes.Interface
	k8s      client.Client
	kc       *keycloak.Server
	kcURL    string // plain HTTP on HostIP: the issuer allows it (allowInsecureHTTP)
	mlflow   *mlflowserver.Server
	helmBin  string
	repoRoot = testenv.RepoRoot()
	figures  = &nodesuite.Log{}
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
	logDir := filepath.Join(repoRoot, "bin", "csi-logs")
	_ = os.RemoveAll(logDir)
	theNode, err = node.Start(context.Background(), node.Options{SandboxImage: images[0], Images: images[1:], LogDir: logDir})
	if err != nil {
		return fail("%v\n(component logs: %s)", err, logDir)
	}
	figures.Figure("node start: %s", theNode.Timings().Total.Round(100*time.Millisecond))
	code := func() int {
		cs = theNode.Client()
		if k8s, err = client.New(theNode.RESTConfig(), client.Options{Scheme: scheme.New()}); err != nil {
			return fail("%v", err)
		}
		stop, err := startServers(logDir)
		defer stop()
		if err != nil {
			return fail("%v", err)
		}
		if err := install(); err != nil {
			return fail("%v", err)
		}
		code := m.Run()
		if err := theNode.Healthy(); err != nil {
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
	figures.Print(os.Stdout, "CSI", time.Since(begin))
	return code
}

func preflight() ([]node.Image, error) {
	helmBin = filepath.Join(repoRoot, "bin", "tools", "helm")
	return nodesuite.Preflight([]nodesuite.Image{
		{File: "pause.tar", Ref: pauseImage, Make: "make images"}, {File: "operator.tar", Ref: operatorImage, Make: "make images"},
		{File: "training-job.tar", Ref: trainingImage, Make: "make images"}, {File: "tokenwatch.tar", Ref: tokenwatchImage, Make: "hack/images.sh tokenwatch"},
	}, "helm")
}

// startServers starts Keycloak and MLflow on HostIP side by side, after making the node's API
// server reachable as the service-account issuer Keycloak fetches keys from:
//   - its discovery documents readable anonymously (the binding Kubernetes leaves to the admin);
//   - its issuer URL resolvable by Keycloak's JVM (a hosts file: the name -> HostIP) and served
//     on port 443 there (a TCP relay to the API server's port; the API server's certificate
//     names kubernetes.default.svc.cluster.local);
//   - its CA in Keycloak's truststore.
func startServers(logDir string) (stop func(), err error) {
	dir, err := os.MkdirTemp("", "csi-test-")
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	host := theNode.HostIP()
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "service-account-issuer-discovery-unauthenticated"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: "system:unauthenticated"}},
	}, metav1.CreateOptions{}); err != nil {
		return stop, err
	}
	relay, err := relayTCP(net.JoinHostPort(host, "443"), apiServerAddr())
	if err != nil {
		return stop, fmt.Errorf("relaying %s:443 to the API server: %w", host, err)
	}
	stops = append(stops, func() { relay.Close() })
	caFile := filepath.Join(dir, "apiserver-ca.crt")
	if err := os.WriteFile(caFile, theNode.RESTConfig().CAData, 0o644); err != nil {
		return stop, err
	}
	hostsFile := filepath.Join(dir, "hosts")
	hn, _ := os.Hostname()
	if err := os.WriteFile(hostsFile, fmt.Appendf(nil, "%s kubernetes.default.svc.cluster.local\n127.0.0.1 localhost %s\n", host, hn), 0o644); err != nil {
		return stop, err
	}
	os.Setenv("JAVA_OPTS_APPEND", "-XX:TieredStopAtLevel=1 -Djdk.net.hosts.file="+hostsFile)
	realm, err := realmFile(dir)
	if err != nil {
		return stop, err
	}
	var ports [2]int
	for i := range ports {
		if ports[i], err = freeport.On(host); err != nil {
			return stop, err
		}
	}
	kcURL = "http://" + net.JoinHostPort(host, strconv.Itoa(ports[0]))
	var wg sync.WaitGroup
	var kcErr, mlErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		kc, kcErr = keycloak.Start(ctx, keycloak.Options{Host: host, Port: ports[0], RealmFiles: []string{realm},
			TruststorePaths: []string{caFile}, LogFile: filepath.Join(logDir, "keycloak.log")})
	}()
	go func() {
		defer wg.Done()
		mlflow, mlErr = mlflowserver.Start(ctx, mlflowserver.Options{
			Venv: os.Getenv("MLFLOW_VENV"), Host: host, Issuer: kcURL + "/realms/" + realmName, Audience: "mlflow",
			ClientID: "mlflow", ClientSecret: "mlflowServerTestSecret0003", UsersGroup: "mlflow_users", AdminsGroup: "mlflow_admins",
			ServeArtifacts: true, LogPath: filepath.Join(logDir, "mlflow.log"),
		})
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
	if _, err := kc.EnsureFederatedClientAuthenticator(ctx, realmName); err != nil {
		return stop, err
	}
	fmt.Printf("Keycloak at %s, MLflow at %s\n", kcURL, mlflow.URL)
	return stop, nil
}

// apiServerAddr is host:port of the node's API server.
func apiServerAddr() string {
	h := theNode.RESTConfig().Host
	if u, err := urlHost(h); err == nil {
		return u
	}
	return h
}

// relayTCP copies connections from listen to target until closed.
func relayTCP(listen, target string) (io.Closer, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return ln, nil
}
