package node_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"
)

// TestSmoke: in a namespace enforcing the restricted Pod Security level, a pod from an imported
// image (no registry) runs, gets its service-account token, reaches the API server through the
// `kubernetes` Service (kube-proxy's rules, the pod network, the API server on HostIP) and is
// authenticated as its ServiceAccount; it reaches a server on the host at HostIP (as it will reach
// Keycloak and MLflow); it sees the Secret it mounts; another finds a Service by name through the
// cluster DNS (CoreDNS) and reaches the host through it. Its log is read through
// pods/log, and a command runs in it through pods/exec (API server -> kubelet, with the kubelet
// client certificate, -> containerd's streaming server). While all this runs, the host shows
// none of it: no mounts, bridges, network namespaces or iptables rules.
func TestSmoke(t *testing.T) {
	ctx := context.Background()
	c := theNode.Client()
	const ns = "smoke"
	if err := theNode.EnsureNamespace(ctx, ns, restricted); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
		t.Fatalf("kube-root-ca.crt in a new namespace: %v", err)
	}
	if _, err := c.CoreV1().Secrets(ns).Create(ctx, secretWith(ns, "greeting", "hello from a Secret"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A server on the host, where Keycloak and MLflow will listen for pods.
	ln, err := net.Listen("tcp", net.JoinHostPort(theNode.HostIP(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	hostURL := "http://" + ln.Addr().String() + "/from-a-pod"

	start := time.Now()
	if _, err := c.CoreV1().Pods(ns).Create(ctx, probePod(ns, "probe", "greeting", "-whoami", "-get", hostURL, "-watch", "/etc/secret/value"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := waitRunning(ctx, c, ns, "probe", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	var log string
	err = waitFor(time.Minute, 250*time.Millisecond, func() error {
		var err error
		log, err = podLog(ctx, c, ns, "probe")
		if err != nil {
			return err
		}
		if strings.Contains(log, "whoami-error") || strings.Contains(log, "get-error") {
			return nil
		}
		if _, ok := seenAt(log, "hello from a Secret"); !ok {
			return fmt.Errorf("log so far: %q", log)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "whoami system:serviceaccount:" + ns + ":default"
	if !strings.Contains(log, want+"\n") {
		t.Fatalf("the pod did not reach the API server as its ServiceAccount: want %q in its log:\n%s", want, log)
	}
	if wantGet := `get 200 "hello /from-a-pod"`; !strings.Contains(log, wantGet+"\n") {
		t.Fatalf("the pod did not reach the host server at %s: want %q in its log:\n%s", hostURL, wantGet, log)
	}
	t.Logf("Pod created -> running, API server reached through the kubernetes Service, host server reached, Secret read: %s", time.Since(start).Round(10*time.Millisecond))

	var stdout, stderr bytes.Buffer
	req := c.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name("probe").SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "probe", Command: []string{"/probe", "-whoami"}, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	exec, err := remotecommand.NewSPDYExecutor(theNode.RESTConfig(), "POST", req.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}); err != nil {
		t.Fatalf("exec in the pod: %v (stderr %q)", err, stderr.String())
	}
	if got := strings.TrimSpace(stdout.String()); got != want {
		t.Fatalf("exec in the pod printed %q, want %q", got, want)
	}

	// The cluster DNS: a pod finds a Service by name (CoreDNS, the pod's search path), and the
	// Service (no selector; its EndpointSlice names the host server) takes it to the host.
	if err := dnsToHost(ctx, ns, ln.Addr().(*net.TCPAddr).Port); err != nil {
		t.Fatal(err)
	}

	now := hostState()
	// Only the global checks: the link, cgroups and scratch directory named after the slot exist by design.
	if err := compareHostState(hostBefore, now); err != nil {
		t.Errorf("while the node runs, the host shows it: %v", err)
	}

	// Nothing in the node can reach beyond this machine: its namespace has no default route.
	routes, err := node.NodeRoutes(theNode)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range strings.Split(routes, "\n") {
		if strings.HasPrefix(r, "default") {
			t.Errorf("the node's network namespace has a default route: %q", r)
		}
	}

	// The Service the pod went through is backed by the API server's address on the host.
	slices, err := c.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			addrs = append(addrs, e.Addresses...)
		}
	}
	if len(addrs) != 1 || addrs[0] != theNode.HostIP() {
		t.Fatalf("endpoints of the kubernetes Service: %v, want [%s]", addrs, theNode.HostIP())
	}
}

// dnsToHost runs a probe pod that GETs http://host.<ns>.svc/by-name: a Service without selector
// whose EndpointSlice points at the host server on HostIP, as a cluster's Service for an external
// database would. The name resolves through the cluster DNS and the pod's search path.
func dnsToHost(ctx context.Context, ns string, port int) error {
	c := theNode.Client()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "host", Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(int32(port))}}},
	}
	if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "host-1", Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: "host", discoveryv1.LabelManagedBy: "test.mlflow-token-operator.io",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{theNode.HostIP()}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(port)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return err
	}
	url := "http://host." + ns + ".svc/by-name"
	if _, err := c.CoreV1().Pods(ns).Create(ctx, probePod(ns, "probe-dns", "", "-get", url, "-pause"), metav1.CreateOptions{}); err != nil {
		return err
	}
	// kube-proxy programs the new Service within a second or so; until then the ClusterIP is
	// unreachable and the probe exits, and the kubelet restarts it (backoff 10 s, 20 s ...).
	want := `get 200 "hello /by-name"`
	return waitFor(2*time.Minute, 500*time.Millisecond, func() error {
		log, err := podLog(ctx, c, ns, "probe-dns")
		if err != nil {
			return err
		}
		if !strings.Contains(log, want+"\n") {
			return fmt.Errorf("the pod did not reach the host server by the Service's name %s: want %q in its log:\n%s", url, want, log)
		}
		return nil
	})
}
