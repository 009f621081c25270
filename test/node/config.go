package node

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"sigs.k8s.io/yaml"
)

// cniBinDir is where Debian's containernetworking-plugins installs the plugins.
const cniBinDir = "/usr/lib/cni"

func (l layout) containerdSocket() string { return l.path("containerd", "containerd.sock") }

// containerdConfig: containerd with its own root, state, socket and CNI configuration.
func (l layout) containerdConfig(sandboxImage string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
temp = %[3]q
oom_score = 0

[grpc]
  address = %[4]q

[ttrpc]
  address = %[5]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[6]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[7]q
  # This machine's root has no CAP_SYS_RESOURCE: without this, every sandbox fails with
  # "runc create failed: ... can't get final child's PID from pipe: EOF" (negative oom_score_adj).
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[8]q
    conf_dir = %[9]q
    max_conf_num = 1
`,
		l.path("containerd", "root"), l.path("containerd", "state"), l.path("containerd", "tmp"),
		l.containerdSocket(), l.containerdSocket()+".ttrpc", l.path("containerd", "opt"),
		sandboxImage, cniBinDir, l.path("cni", "net.d"))
}

// cniConfig: a bridge with host-local addresses from the pod /24. isGateway gives the bridge the
// first address and makes it the pods' default gateway, so pods reach the node's network namespace
// and, through it, the host side of the link (HostIP). No masquerade: the host routes the pod /24
// back to the node.
func (l layout) cniConfig() ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"cniVersion": "0.4.0",
		"name":       l.name,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      "cni0",
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": l.podCIDR.String(), "gateway": l.podGW.String()}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": l.path("cni", "ipam"),
			},
		}},
	}, "", "  ")
}

// kubeletConfig is the KubeletConfiguration; each unusual setting says which error it avoids.
func (l layout) kubeletConfig(p *pki, syncFrequency time.Duration) ([]byte, error) {
	cfg := map[string]any{
		"apiVersion":         "kubelet.config.k8s.io/v1beta1",
		"kind":               "KubeletConfiguration",
		"address":            l.nodeIP.String(),
		"port":               10250,
		"readOnlyPort":       0,
		"healthzBindAddress": "127.0.0.1",
		"healthzPort":        10248,
		"tlsCertFile":        p.file("kubelet-serving.crt"),
		"tlsPrivateKeyFile":  p.file("kubelet-serving.key"),
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": p.file("ca.crt")},
		},
		"authorization":            map[string]any{"mode": "Webhook"},
		"containerRuntimeEndpoint": "unix://" + l.containerdSocket(),
		// cgroup v1 (this machine's hybrid hierarchy): kubelet >= 1.35 refuses it unless told.
		"failCgroupV1":  false,
		"cgroupDriver":  "cgroupfs", // no systemd here
		"cgroupRoot":    "/" + l.name,
		"cgroupsPerQOS": true,
		"failSwapOn":    false,
		// The kubelet wants panic_on_oops=1, overcommit_memory=1 and kernel.panic=10, and sets them
		// unless told to protect the kernel's defaults. They are the shared host's, not ours: the node
		// sees the values it wants (files mounted over them in its mount namespace), and with this
		// the kubelet fails rather than write, should that ever stop working.
		"protectKernelDefaults": true,
		"oomScoreAdj":           0, // -999 needs CAP_SYS_RESOURCE
		"clusterDomain":         "cluster.local",
		// No cluster DNS: pods get no nameserver instead of this machine's (which would send their
		// lookups to another host). Pods address the API server and host services by IP.
		"resolvConf": "",
		// Images are imported, never pulled: image GC must never delete one, and a shared machine's
		// full disk must not evict the test pods.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"evictionHard": map[string]string{
			"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%", "imagefs.available": "1%",
		},
		"volumePluginDir":    l.path("kubelet", "volume-plugins"),
		"registerNode":       true,
		"rotateCertificates": false,
		"serverTLSBootstrap": false,
	}
	if syncFrequency > 0 {
		cfg["syncFrequency"] = syncFrequency.String()
	}
	return yaml.Marshal(cfg)
}

// kubeProxyConfig: iptables mode in the node's network namespace. The conntrack settings are
// left alone (0): they are host-wide sysctls.
func (l layout) kubeProxyConfig(kubeconfig string) ([]byte, error) {
	return yaml.Marshal(map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"mode":               "iptables",
		"clientConnection":   map[string]any{"kubeconfig": kubeconfig},
		"hostnameOverride":   l.name,
		"bindAddress":        l.nodeIP.String(),
		"healthzBindAddress": "127.0.0.1:10256",
		"metricsBindAddress": "127.0.0.1:10249",
		"clusterCIDR":        l.podCIDR.String(),
		"nodePortAddresses":  []string{"primary"},
		"detectLocalMode":    "ClusterCIDR",
		"oomScoreAdj":        0,
		"conntrack": map[string]any{
			"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
		},
		"iptables": map[string]any{"localhostNodePorts": false, "syncPeriod": "30s", "minSyncPeriod": "1s"},
	})
}

func writeFile(path string, data []byte) error {
	return os.WriteFile(path, data, 0o644)
}
