// Package node runs a real single-node Kubernetes cluster on this machine for tests and demos:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy
// and CoreDNS, with pods from locally built image tarballs (no registry, no Docker).
//
// # Use
//
//	n, err := node.Start(ctx, node.Options{
//		SandboxImage: node.Image{Path: "bin/images/pause.tar", Ref: "localhost/mlflow-token-operator/pause:v" + version},
//		Images:       []node.Image{{Path: "bin/images/operator.tar", Ref: "ghcr.io/mlflow-token-operator/mlflow-token-operator:v" + version}},
//	})
//	if err != nil { ... }           // one line saying what is missing and the command that fixes it
//	defer n.Stop()                  // everything gone; an error names anything left behind
//	n.Kubeconfig()                  // cluster-admin kubeconfig file (for helm, kubectl)
//	n.RESTConfig(), n.Client()      // the same, for Go clients
//	n.HostIP()                      // an address of this machine that pods reach: Keycloak and MLflow listen here
//	n.ImportImage(ctx, "x.tar")     // more images, any time
//	n.KillContainer(ctx, id, syscall.SIGKILL) // a crash: the container's main process killed through containerd
//	n.EnsureNamespace(ctx, "ns", map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
//	n.DumpLogs(os.Stdout, 30)       // the components' last log lines, for a failing test
//
// Pods use imported images with imagePullPolicy Never (or IfNotPresent). Start returns when the
// Node is Ready and new namespaces get their default ServiceAccount and kube-root-ca.crt (about
// 10 s on 2 cores); it prints its timings. The binaries come from hack/build-envtest.sh (etcd and
// kube-apiserver) and hack/build-envtest.sh node (the rest), the same pinned k8s.io/kubernetes
// module as envtest; containerd, runc, the CNI plugins and iptables are Debian's. It needs root.
// `go -C test run ./node/cmd/node` starts one by hand.
//
// # The node's sandbox
//
// Everything of the node that a host would notice lives in namespaces the harness creates, held
// by one process: a network namespace (containerd, kubelet, kube-proxy, the CNI bridge, the pods'
// veths, every iptables rule of kube-proxy and the CNI plugins) and a private mount namespace (a
// tmpfs on /run for containerd's shim sockets and the pods' netns files, an overlay on /var whose
// writes land in the scratch directory, the kubelet's Secret volumes, containerd's rootfs mounts).
// The host sees a veth link named after the slot (mtonode-<n>, with HostIP), two routes through
// it (the pod and Service ranges), cgroups /mtonode-<n> (pods, through the kubelet's cgroupRoot)
// and the scratch directory /tmp/mtonode-<n>; etcd, the API server, controller-manager and
// scheduler run on the host side, the API server listening on HostIP only. The node's namespace
// has no default route: pods reach this machine (HostIP, the API server) and nothing else.
//
// Up to four nodes run side by side (slots 0-3, each with its own addresses in 10.213.0.0/16 and
// names); a node takes the first free slot, and waits when all are taken. A slot is locked by an
// abstract unix socket, which the kernel releases with its last holder.
//
// # Teardown
//
// Stop, a SIGINT/SIGTERM to the process (unless Options.KeepSignals), and the reaper all run the
// same cleanup. The reaper is a copy of the running program (test binary or demo), started by
// Start in its own session, that waits on a pipe: when the program ends without Stop (a panic,
// `go test -timeout`, SIGKILL), it removes the node, and holds the slot's lock until it is done.
// The cleanup finds the node's processes by an environment variable every component carries
// (containerd's shims inherit it), every process in their network namespace, and every process in
// the slot's cgroups (the pods); it kills them, which ends both namespaces and with them the
// bridge, veths, iptables rules and mounts; then it removes the link, the cgroups and the scratch
// directory, and checks that nothing is left. Start runs it first, so a run after a killed one
// (even with its reaper killed too) starts clean. Nothing not named after a slot is touched.
//
// # What differs from a production cluster
//
//   - One node, which runs the control plane's clients as host processes, not static pods; etcd
//     without TLS on loopback, with fsync off.
//   - The cluster DNS is CoreDNS with its kubernetes plugin only (hack/tools/coredns), on the host
//     side at HostIP, which the kubelet gives pods as their nameserver (not a kube-dns Service's
//     ClusterIP). It answers cluster names (<service>.<namespace>.svc.cluster.local) and refuses
//     every other name (no forwarding): host services are addressed by IP (HostIP).
//   - No image registry and no pulls: image GC is off (a removed image could not come back) and
//     disk-pressure eviction thresholds are 1 %.
//   - The kubelet sees the kernel settings it wants (panic_on_oops=1, overcommit_memory=1, ...)
//     through files mounted over /proc/sys in its mount namespace, and protectKernelDefaults is on:
//     the shared host's settings are never changed.
//   - cgroup v1 with the cgroupfs driver (the machines this runs on have no systemd), and
//     containerd restricts oom_score_adj (root here lacks CAP_SYS_RESOURCE), so the kubelet's and
//     pods' OOM scores are not what a production node sets.
//   - The kubelet keeps its defaults otherwise, syncFrequency 1m included (Options.KubeletSyncFrequency
//     changes it): Secret volumes take as long to update as in production.
//   - No cloud provider, no CSI, no LoadBalancer; NodePorts only in the node's namespace.
package node
