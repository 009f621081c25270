package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/internal/freeport"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options say how to start a node. The zero value plus a SandboxImage works under `make test`.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
	// kube-proxy. Default: $KUBEBUILDER_ASSETS (bin/k8s under `make test`).
	BinDir string
	// SandboxImage is the pod sandbox ("pause") image, imported before the kubelet starts.
	SandboxImage Image
	// Images are imported before Start returns (more can be imported later with ImportImage).
	Images []Image
	// KubeletSyncFrequency is the kubelet's syncFrequency; 0 keeps the kubelet's default (1m), as
	// production clusters run.
	KubeletSyncFrequency time.Duration
	// LogDir receives one log file per component (and kept after Stop). Default: inside the scratch
	// directory, removed by Stop.
	LogDir string
	// Log receives progress lines and timings. Default: os.Stdout.
	Log io.Writer
	// StartTimeout bounds Start once it has a slot (default 3 minutes: a loaded 2-core machine is
	// slow). Waiting for a slot, when all are taken, is bounded by Start's context only.
	StartTimeout time.Duration
	// KeepSignals leaves SIGINT/SIGTERM alone: set it in a program that handles them itself and
	// calls Stop. By default the first SIGINT/SIGTERM stops every running node, then ends the
	// process with that signal.
	KeepSignals bool
}

// Image is an image tarball (OCI layout or docker-archive, as `ctr images import` reads) and the
// name it holds.
type Image struct {
	Path string
	Ref  string
}

// Timings are how long the start took, measured.
type Timings struct {
	ControlPlane time.Duration // until the API server answered /readyz
	NodeReady    time.Duration // from then until the Node was Ready and the default ServiceAccount and kube-root-ca.crt existed
	Total        time.Duration // the whole Start: cleanup of leftovers, all of the above, and the image imports
}

// Node is a running single-node cluster.
type Node struct {
	l      layout
	o      Options
	logDir string
	logf   func(string, ...any)

	lock     *net.UnixListener
	reaper   *exec.Cmd
	reaperIn io.WriteCloser

	pki        *pki
	apiPort    int
	kubeconfig string
	restConfig *rest.Config
	client     kubernetes.Interface

	mu     sync.Mutex
	procs  []*proc // in start order
	holder *proc

	timings  Timings
	stopOnce sync.Once
	stopErr  error
}

// Start starts a node: it takes a free slot, removes what a killed run of that slot left, and
// starts etcd, the API server, controller-manager, scheduler, containerd, kubelet and kube-proxy.
// It returns once the Node is Ready and new namespaces get their default ServiceAccount and
// kube-root-ca.crt. On error, everything it started is gone again.
func Start(ctx context.Context, o Options) (*Node, error) {
	begin := time.Now()
	if o.BinDir == "" {
		o.BinDir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if o.Log == nil {
		o.Log = os.Stdout
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 3 * time.Minute
	}
	if err := Preflight(o); err != nil {
		return nil, err
	}
	if err := checkImages(o); err != nil {
		return nil, err
	}
	n := &Node{o: o}
	n.logf = func(format string, args ...any) {
		fmt.Fprintf(o.Log, "[node %s] %s\n", n.l.name, fmt.Sprintf(format, args...))
	}
	if err := n.takeSlot(ctx); err != nil { // waits as long as ctx allows when all slots are taken
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	if err := n.startReaper(); err != nil {
		n.lock.Close()
		return nil, err
	}
	if err := cleanSlot(n.l, n.logf); err != nil {
		n.abort()
		return nil, fmt.Errorf("removing what an earlier run left: %w", err)
	}
	if err := n.l.checkAddressesFree(); err != nil {
		n.abort()
		return nil, err
	}
	if !o.KeepSignals {
		stopOnSignal(n)
	}
	if err := n.up(ctx, begin); err != nil {
		err = fmt.Errorf("starting node %s: %w", n.l.name, err)
		if stopErr := n.Stop(); stopErr != nil {
			err = fmt.Errorf("%w (and stopping it: %v)", err, stopErr)
		}
		return nil, err
	}
	n.timings.Total = time.Since(begin)
	n.logf("Node Ready: %s total (control plane %s, node %s); kubeconfig %s",
		round(n.timings.Total), round(n.timings.ControlPlane), round(n.timings.NodeReady), n.kubeconfig)
	return n, nil
}

func (n *Node) takeSlot(ctx context.Context) error {
	waiting := false
	for {
		for s := 0; s < maxSlots; s++ {
			l := newLayout(s)
			ln, err := l.lock()
			if errors.Is(err, errSlotBusy) {
				continue
			}
			if err != nil {
				return err
			}
			n.l, n.lock = l, ln
			return nil
		}
		if !waiting {
			fmt.Fprintf(n.o.Log, "[node] All %d node slots are in use on this machine: waiting for one\n", maxSlots)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no free node slot: %w", ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
}

func (n *Node) up(ctx context.Context, begin time.Time) error {
	l := n.l
	n.logDir = n.o.LogDir
	if n.logDir == "" {
		n.logDir = l.path("logs")
	}
	for _, d := range []string{l.scratch, n.logDir, l.path("cni", "net.d"), l.path("containerd"), l.path("kubelet"), l.path("var", "upper"), l.path("var", "work"), l.path("sysctl")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := n.writeConfigs(); err != nil {
		return err
	}
	if err := n.makeCgroups(); err != nil {
		return err
	}
	if err := n.startSandbox(); err != nil {
		return err
	}

	// etcd and the API server on the host side; containerd (and the images) in the node, meanwhile.
	var wg sync.WaitGroup
	var runtimeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtimeErr = n.startRuntime(ctx)
	}()
	cpErr := n.startControlPlane(ctx)
	n.timings.ControlPlane = time.Since(begin)
	wg.Wait()
	if err := errors.Join(cpErr, runtimeErr); err != nil {
		return err
	}
	n.logf("Control plane ready in %s", round(n.timings.ControlPlane))

	if err := n.startNodeComponents(); err != nil {
		return err
	}
	// The kubelet needs only the sandbox image: the others are imported while it starts.
	imported := make(chan error, 1)
	go func() {
		var errs []error
		for _, img := range n.o.Images {
			errs = append(errs, n.ImportImage(ctx, img.Path))
		}
		imported <- errors.Join(errs...)
	}()
	readyErr := n.waitReady(ctx)
	n.timings.NodeReady = time.Since(begin) - n.timings.ControlPlane
	return errors.Join(readyErr, <-imported)
}

func (n *Node) writeConfigs() error {
	l := n.l
	p, err := newPKI(l.path("pki"))
	if err != nil {
		return err
	}
	n.pki = p
	// HostIP does not exist yet; a port free on loopback is free on it too (a wildcard listener
	// would hold both).
	apiPort, err := freeport.On("127.0.0.1")
	if err != nil {
		return err
	}
	n.apiPort = apiPort
	server := "https://" + net.JoinHostPort(l.hostIP.String(), strconv.Itoa(apiPort))

	ip := func(s string) net.IP { return net.ParseIP(s) }
	if _, _, err := p.issue("apiserver", "kube-apiserver", nil,
		[]net.IP{ip(l.hostIP.String()), ip(l.serviceIP.String()), ip("127.0.0.1")},
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}, true); err != nil {
		return err
	}
	if _, _, err := p.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil, false); err != nil {
		return err
	}
	if _, _, err := p.issue("kubelet-serving", l.name, nil, []net.IP{ip(l.nodeIP.String())}, []string{l.name}, true); err != nil {
		return err
	}
	if err := p.serviceAccountKey(); err != nil {
		return err
	}
	clients := []struct{ name, cn, org string }{
		{"admin", "mlflow-token-operator-test-admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kube-proxy", "system:kube-proxy", ""},
		{"kubelet", "system:node:" + l.name, "system:nodes"},
	}
	for _, c := range clients {
		var orgs []string
		if c.org != "" {
			orgs = []string{c.org}
		}
		if _, err := p.kubeconfig(c.name, c.cn, orgs, server); err != nil {
			return err
		}
	}
	n.kubeconfig = p.file("admin.kubeconfig")
	n.restConfig, err = clientcmd.BuildConfigFromFlags("", n.kubeconfig)
	if err != nil {
		return err
	}
	// Tests poll many objects at once (pod logs of a whole measurement): client-go's default of 5
	// requests per second would make them wait on the client, not the cluster.
	n.restConfig.QPS, n.restConfig.Burst = 100, 200
	n.client, err = kubernetes.NewForConfig(n.restConfig)
	if err != nil {
		return err
	}

	cni, err := l.cniConfig()
	if err != nil {
		return err
	}
	kubelet, err := l.kubeletConfig(p, n.o.KubeletSyncFrequency)
	if err != nil {
		return err
	}
	proxy, err := l.kubeProxyConfig(p.file("kube-proxy.kubeconfig"))
	if err != nil {
		return err
	}
	// CoreDNS watches Services and EndpointSlices: the admin identity (a test cluster's DNS;
	// production gives it a ClusterRole that reads only those).
	coredns := l.corefile(p.file("admin.kubeconfig"))
	for path, data := range map[string][]byte{
		l.path("Corefile"): []byte(coredns),
		l.path("cni", "net.d", "10-"+l.name+".conflist"): cni,
		l.path("containerd", "config.toml"):              []byte(l.containerdConfig(n.o.SandboxImage.Ref)),
		l.path("kubelet", "config.yaml"):                 kubelet,
		l.path("kube-proxy.yaml"):                        proxy,
	} {
		if err := writeFile(path, data); err != nil {
			return err
		}
	}
	return nil
}

// makeCgroups creates the kubelet's cgroupRoot (/mtonode-<slot>) in every hierarchy: the kubelet
// refuses a root that does not exist, and all pods live under it, which is how the cleanup finds them.
func (n *Node) makeCgroups() error {
	for _, mnt := range cgroupMounts() {
		dir := filepath.Join(mnt, n.l.name)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		// A new cpuset cgroup (v1) has no CPUs and memory nodes until given its parent's.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if data, err := os.ReadFile(filepath.Join(mnt, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
					return fmt.Errorf("setting %s of %s: %w", f, dir, err)
				}
			}
		}
	}
	return nil
}

// startSandbox creates the node's network and mount namespaces, held by a `sleep` process:
//   - network: a veth pair, host side <slot name> with HostIP, node side eth0 with the node IP;
//     routes on the host send the pod and Service ranges to the node. The node has no default
//     route, so nothing in it reaches beyond this machine.
//   - mounts: a private tmpfs on /run (containerd's shim sockets and the pods' netns files live
//     at fixed paths there) and an overlay on /var whose writes land in the scratch directory
//     (/var/log/pods, /var/log/containers, the CNI cache), so the node writes nothing to the host.
func (n *Node) startSandbox() error {
	l := n.l
	holder, err := startProc(l, n.logDir, "sandbox", []string{"sleep", "infinity"}, func(c *exec.Cmd) {
		c.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS | syscall.CLONE_NEWNET // Go also makes / private
	})
	if err != nil {
		return err
	}
	n.holder = holder
	n.track(holder)
	pid := strconv.Itoa(holder.pid())
	inNet := func(args ...string) []string { return append([]string{"-t", pid, "-n", "--"}, args...) }
	inMnt := func(args ...string) []string { return append([]string{"-t", pid, "-m", "--"}, args...) }
	steps := [][]string{
		{"ip", "link", "add", l.name, "type", "veth", "peer", "name", "eth0", "netns", pid},
		{"ip", "addr", "add", l.hostIP.String() + "/24", "dev", l.name},
		{"ip", "link", "set", l.name, "up"},
		append([]string{"nsenter"}, inNet("ip", "link", "set", "lo", "up")...),
		append([]string{"nsenter"}, inNet("ip", "addr", "add", l.nodeIP.String()+"/24", "dev", "eth0")...),
		append([]string{"nsenter"}, inNet("ip", "link", "set", "eth0", "up")...),
		// Pods reach the host through the node: the node forwards (a per-namespace setting).
		append([]string{"nsenter"}, inNet("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")...),
		{"ip", "route", "add", l.podCIDR.String(), "via", l.nodeIP.String(), "dev", l.name},
		{"ip", "route", "add", l.svcCIDR.String(), "via", l.nodeIP.String(), "dev", l.name},
		append([]string{"nsenter"}, inMnt("mount", "-t", "tmpfs", "-o", "mode=0755,size=256m", "tmpfs", "/run")...),
		append([]string{"nsenter"}, inMnt("mount", "-t", "overlay", "overlay", "-o",
			"lowerdir=/var,upperdir="+l.path("var", "upper")+",workdir="+l.path("var", "work"), "/var")...),
	}
	// The kernel settings the kubelet insists on (see protectKernelDefaults in config.go), shown to
	// the node only.
	for _, s := range []struct{ path, value string }{
		{"vm/overcommit_memory", "1"}, {"vm/panic_on_oom", "0"}, {"kernel/panic", "10"},
		{"kernel/panic_on_oops", "1"}, {"kernel/keys/root_maxkeys", "1000000"}, {"kernel/keys/root_maxbytes", "25000000"},
	} {
		file := l.path("sysctl", strings.ReplaceAll(s.path, "/", "."))
		if err := writeFile(file, []byte(s.value+"\n")); err != nil {
			return err
		}
		steps = append(steps, append([]string{"nsenter"}, inMnt("mount", "--bind", file, "/proc/sys/"+s.path)...))
	}
	for _, s := range steps {
		if holder.exited() {
			return holder.exitError()
		}
		if _, err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) startRuntime(ctx context.Context) error {
	l := n.l
	t := time.Now()
	p, err := startProc(l, n.logDir, "containerd", inSandbox(n.holder.pid(), "containerd", "--config", l.path("containerd", "config.toml")), nil)
	if err != nil {
		return err
	}
	n.track(p)
	if err := poll(ctx, p, 100*time.Millisecond, func() error {
		_, err := run("ctr", "-a", l.containerdSocket(), "version")
		return err
	}); err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	n.logf("containerd ready in %s", round(time.Since(t)))
	return n.ImportImage(ctx, n.o.SandboxImage.Path)
}

func (n *Node) startControlPlane(ctx context.Context) error {
	l := n.l
	bin := func(name string) string { return filepath.Join(n.o.BinDir, name) }
	t := time.Now()
	clientPort, err := freeport.On("127.0.0.1")
	if err != nil {
		return err
	}
	peerPort, err := freeport.On("127.0.0.1")
	if err != nil {
		return err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	etcd, err := startProc(l, n.logDir, "etcd", []string{bin("etcd"),
		"--name=" + l.name, "--data-dir=" + l.path("etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=" + l.name + "=" + peerURL,
		"--unsafe-no-fsync=true", // test data: durability buys nothing, fsyncs cost seconds on a busy disk
	}, nil)
	if err != nil {
		return err
	}
	n.track(etcd)
	if err := poll(ctx, etcd, 100*time.Millisecond, func() error { return httpOK(etcdURL + "/health") }); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}

	p := n.pki
	// The API server listens on HostIP, the host side of the node's link: pods reach it there
	// (through the `kubernetes` Service, by kube-proxy's rules), and so do the host's clients.
	// It advertises that address, so the default endpoint reconciler ("lease") keeps the
	// `kubernetes` Service's endpoints pointing at it. (--endpoint-reconciler-type=none is only
	// needed when the API server advertises 127.0.0.1, which the reconciler refuses.)
	apiserver, err := startProc(l, n.logDir, "kube-apiserver", []string{bin("kube-apiserver"),
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + l.hostIP.String(),
		"--advertise-address=" + l.hostIP.String(),
		"--secure-port=" + strconv.Itoa(n.apiPort),
		"--cert-dir=" + l.path("apiserver"),
		"--tls-cert-file=" + p.file("apiserver.crt"), "--tls-private-key-file=" + p.file("apiserver.key"),
		"--client-ca-file=" + p.file("ca.crt"),
		"--service-cluster-ip-range=" + l.svcCIDR.String(),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.file("sa.pub"),
		"--service-account-signing-key-file=" + p.file("sa.key"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate=" + p.file("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p.file("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + p.file("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
	}, nil)
	if err != nil {
		return err
	}
	n.track(apiserver)
	readyz := n.client.Discovery().RESTClient().Get().AbsPath("/readyz")
	if err := poll(ctx, apiserver, 200*time.Millisecond, func() error {
		_, err := readyz.DoRaw(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	n.logf("etcd and kube-apiserver ready in %s (https://%s)", round(time.Since(t)), net.JoinHostPort(l.hostIP.String(), strconv.Itoa(n.apiPort)))
	return nil
}

func (n *Node) startNodeComponents() error {
	l := n.l
	p := n.pki
	bin := func(name string) string { return filepath.Join(n.o.BinDir, name) }
	starts := []struct {
		name string
		argv []string
	}{
		{"kube-controller-manager", []string{bin("kube-controller-manager"),
			"--kubeconfig=" + p.file("controller-manager.kubeconfig"),
			"--secure-port=0", "--leader-elect=false",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + p.file("sa.key"),
			"--root-ca-file=" + p.file("ca.crt"),
			"--cluster-signing-cert-file=" + p.file("ca.crt"),
			"--cluster-signing-key-file=" + p.file("ca.key"),
			"--cluster-name=" + l.name,
			"--allocate-node-cidrs=false",
		}},
		{"kube-scheduler", []string{bin("kube-scheduler"),
			"--kubeconfig=" + p.file("scheduler.kubeconfig"),
			"--secure-port=0", "--leader-elect=false",
		}},
		{"kubelet", inSandbox(n.holder.pid(), bin("kubelet"),
			"--config="+l.path("kubelet", "config.yaml"),
			"--kubeconfig="+p.file("kubelet.kubeconfig"),
			"--root-dir="+l.path("kubelet", "root"),
			"--hostname-override="+l.name,
			"--node-ip="+l.nodeIP.String(),
		)},
		{"kube-proxy", inSandbox(n.holder.pid(), bin("kube-proxy"), "--config="+l.path("kube-proxy.yaml"))},
		// The cluster DNS, on the host side at HostIP (the kubelet's clusterDNS), where pods reach it.
		{"coredns", []string{bin("coredns"), "-conf", l.path("Corefile")}},
	}
	for _, s := range starts {
		pr, err := startProc(l, n.logDir, s.name, s.argv, nil)
		if err != nil {
			return err
		}
		n.track(pr)
	}
	return nil
}

// waitReady waits for the Node to be Ready and for the controllers to do their part in a
// namespace: the default ServiceAccount and the kube-root-ca.crt ConfigMap.
func (n *Node) waitReady(ctx context.Context) error {
	t := time.Now()
	err := poll(ctx, nil, 200*time.Millisecond, func() error {
		if err := n.anyExited(); err != nil {
			return permanent(err)
		}
		node, err := n.client.CoreV1().Nodes().Get(ctx, n.l.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s is not Ready", n.l.name)
	})
	if err != nil {
		return err
	}
	n.logf("Node %s Ready %s after the kubelet started", n.l.name, round(time.Since(t)))
	// The cluster DNS answers for the kubernetes Service (CoreDNS has synced with the API server).
	dns := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(n.l.hostIP.String(), "53"))
	}}
	return poll(ctx, nil, 200*time.Millisecond, func() error {
		if err := n.anyExited(); err != nil {
			return permanent(err)
		}
		if _, err := n.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		if _, err := n.client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
			return err
		}
		name := "kubernetes.default.svc." + clusterDomain
		addrs, err := dns.LookupHost(ctx, name)
		if err != nil {
			return fmt.Errorf("cluster DNS: %w", err)
		}
		if len(addrs) != 1 || addrs[0] != n.l.serviceIP.String() {
			return fmt.Errorf("cluster DNS: %s is %v, want %s", name, addrs, n.l.serviceIP)
		}
		return nil
	})
}

func (n *Node) track(p *proc) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.procs = append(n.procs, p)
}

func (n *Node) anyExited() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.procs {
		if p.exited() {
			return p.exitError()
		}
	}
	return nil
}

// Healthy reports an error when a component has exited since Start.
func (n *Node) Healthy() error { return n.anyExited() }

// ImportImage imports an image tarball into the node's containerd (namespace k8s.io, where the
// kubelet looks); pods then use it without any registry (imagePullPolicy Never or IfNotPresent).
func (n *Node) ImportImage(ctx context.Context, path string) error {
	t := time.Now()
	if _, err := runCtx(ctx, "ctr", "-a", n.l.containerdSocket(), "-n", "k8s.io", "images", "import", path); err != nil {
		return fmt.Errorf("importing %s: %w", path, err)
	}
	n.logf("Imported %s in %s", filepath.Base(path), round(time.Since(t)))
	return nil
}

// KillContainer sends sig to the main process of a running container, through containerd, as a
// crash or the kernel's OOM killer would end it (SIGKILL: no chance to clean up). containerID is
// a pod's status.containerStatuses[].containerID ("containerd://<id>") or the bare id. The kubelet
// sees the container exit and restarts it as the pod's restartPolicy says.
func (n *Node) KillContainer(ctx context.Context, containerID string, sig syscall.Signal) error {
	id, found := strings.CutPrefix(containerID, "containerd://")
	if !found && strings.Contains(containerID, "://") {
		return fmt.Errorf("container %s does not run in containerd", containerID)
	}
	if id == "" {
		return errors.New("no container id (has the container started?)")
	}
	_, err := runCtx(ctx, "ctr", "-a", n.l.containerdSocket(), "-n", "k8s.io", "tasks", "kill", "--signal", strconv.Itoa(int(sig)), id)
	return err
}

// Stop stops every process of the node (pods included) and removes everything it created:
// the link, the network and mount namespaces (and with them the bridge, the pods' veths and
// network namespaces, kube-proxy's iptables rules and the mounts), the cgroups and the scratch
// directory. It returns an error naming anything left behind. Safe to call more than once.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		forget(n)
		// The kubelet first, so that it does not restart the containers being killed.
		n.mu.Lock()
		procs := append([]*proc(nil), n.procs...)
		n.mu.Unlock()
		for _, p := range procs {
			if p.name == "kubelet" || p.name == "kube-proxy" {
				p.stop(5 * time.Second)
			}
		}
		n.stopErr = cleanSlot(n.l, n.logf)
		for _, p := range procs {
			p.stop(5 * time.Second) // all are gone already: this only waits for them
		}
		if n.stopErr == nil {
			n.logf("Stopped; nothing left behind")
		}
		n.releaseSlot(n.stopErr == nil)
	})
	return n.stopErr
}

// abort releases the slot after a failed start before anything ran.
func (n *Node) abort() { n.releaseSlot(false) }

// Kubeconfig is the path of a kubeconfig file with cluster-admin rights (system:masters). It is
// removed by Stop.
func (n *Node) Kubeconfig() string { return n.kubeconfig }

// RESTConfig is a client configuration with cluster-admin rights (QPS 100, burst 200).
func (n *Node) RESTConfig() *rest.Config { return rest.CopyConfig(n.restConfig) }

// Client is a clientset with cluster-admin rights.
func (n *Node) Client() kubernetes.Interface { return n.client }

// Name is the Node's name (also the name of everything the node creates on the host).
func (n *Node) Name() string { return n.l.name }

// HostIP is an address of this machine that pods reach: a host service for pods (Keycloak,
// MLflow) listens here. It exists while the node runs.
func (n *Node) HostIP() string { return n.l.hostIP.String() }

// NodeIP is the kubelet's node IP (in the node's network namespace).
func (n *Node) NodeIP() string { return n.l.nodeIP.String() }

// PodCIDR and ServiceCIDR are the node's pod and Service ranges; the host routes both to the node,
// so the host reaches pods and ClusterIPs too.
func (n *Node) PodCIDR() string     { return n.l.podCIDR.String() }
func (n *Node) ServiceCIDR() string { return n.l.svcCIDR.String() }

// Timings are how long Start took.
func (n *Node) Timings() Timings { return n.timings }

// LogDir is where the components' logs are (<component>.log).
func (n *Node) LogDir() string { return n.logDir }

// DumpLogs writes the last lines of every component's log (for a failing test's output).
func (n *Node) DumpLogs(w io.Writer, lines int) {
	n.mu.Lock()
	procs := append([]*proc(nil), n.procs...)
	n.mu.Unlock()
	for _, p := range procs {
		fmt.Fprintf(w, "----- %s (last %d lines of %s)\n%s\n", p.name, lines, p.logPath, tail(p.logPath, lines))
	}
}

// EnsureNamespace creates a namespace with labels (e.g. pod-security.kubernetes.io/enforce) and
// waits for its default ServiceAccount, which pods need before they can be created.
func (n *Node) EnsureNamespace(ctx context.Context, name string, labels map[string]string) error {
	_, err := n.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return poll(ctx, nil, 100*time.Millisecond, func() error {
		_, err := n.client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// poll calls f until it returns nil, the context ends, p exits, or f returns a permanent error.
func poll(ctx context.Context, p *proc, every time.Duration, f func() error) error {
	var last error
	for {
		if p != nil && p.exited() {
			return p.exitError()
		}
		last = f()
		if last == nil {
			return nil
		}
		var perm *permanentError
		if errors.As(last, &perm) {
			return perm.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(every):
		}
	}
}

// permanentError ends a poll at once.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

func permanent(err error) error { return &permanentError{err} }

func httpOK(url string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

// PodReady reports whether p's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Nodes stopped by the first SIGINT/SIGTERM.
var (
	liveMu  sync.Mutex
	live    = map[*Node]bool{}
	sigOnce sync.Once
)

func stopOnSignal(n *Node) {
	liveMu.Lock()
	live[n] = true
	liveMu.Unlock()
	sigOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			sig := <-ch
			fmt.Fprintf(os.Stderr, "[node] %v: stopping the node(s) before exiting\n", sig)
			liveMu.Lock()
			nodes := make([]*Node, 0, len(live))
			for n := range live {
				nodes = append(nodes, n)
			}
			liveMu.Unlock()
			for _, n := range nodes {
				if err := n.Stop(); err != nil {
					fmt.Fprintf(os.Stderr, "[node] %v\n", err)
				}
			}
			signal.Reset(sig)
			_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		}()
	})
}

func forget(n *Node) {
	liveMu.Lock()
	delete(live, n)
	liveMu.Unlock()
}
