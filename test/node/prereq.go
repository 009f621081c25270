package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Components built from k8s.io/kubernetes (and etcd, and CoreDNS) by hack/build-envtest.sh.
var kubeBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns"}

// debianParts maps what the node runs from this machine to the Debian package that ships it.
var debianParts = []struct{ path, pkg string }{
	{"containerd", "containerd"},
	{"containerd-shim-runc-v2", "containerd"},
	{"ctr", "containerd"},
	{"runc", "runc"},
	{filepath.Join(cniBinDir, "bridge"), "containernetworking-plugins"},
	{filepath.Join(cniBinDir, "host-local"), "containernetworking-plugins"},
	{filepath.Join(cniBinDir, "loopback"), "containernetworking-plugins"},
	{"iptables", "iptables"},
	{"iptables-restore", "iptables"},
	{"ip6tables", "iptables"},
	{"ip", "iproute2"},
	{"nsenter", "util-linux"},
	{"mount", "mount"},
	{"sleep", "coreutils"},
	{"sh", "dash"},
}

// Preflight says in one line what is missing for a node to run on this machine (root, Debian
// packages, the Kubernetes binaries in o.BinDir), and the command that fixes it; nil when nothing is.
func Preflight(o Options) error {
	if err := HostPreflight(); err != nil {
		return err
	}
	return checkBinaries(o)
}

// HostPreflight is the part of Preflight that no build fixes: root, the Debian packages, the
// kernel's overlay filesystem and a cgroup hierarchy. A program that can also do without a node
// (`make run-local`) asks it before building the node's binaries.
func HostPreflight() error {
	if !isRoot() {
		return errors.New("the node needs root (it creates a network namespace, cgroups and mounts): run the tests as root")
	}
	var missing []string
	seen := map[string]bool{}
	for _, p := range debianParts {
		if _, err := lookPath(p.path); err != nil && !seen[p.pkg] {
			seen[p.pkg] = true
			missing = append(missing, p.pkg)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the node needs Debian packages that are not installed: run `apt-get install -y %s`", strings.Join(missing, " "))
	}
	if data, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(data), "overlay") {
		return errors.New("the kernel has no overlay filesystem (containerd's snapshotter needs it): run `modprobe overlay`")
	}
	if len(cgroupMounts()) == 0 {
		return errors.New("no cgroup hierarchy is mounted under /sys/fs/cgroup: the kubelet needs one")
	}
	return nil
}

func checkBinaries(o Options) error {
	if o.BinDir == "" {
		return errors.New("no directory with the Kubernetes binaries: set KUBEBUILDER_ASSETS, or run the tests with `make test` (hack/build-envtest.sh node builds them into bin/k8s)")
	}
	var absent []string
	for _, b := range kubeBinaries {
		if st, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil || st.Mode()&0o111 == 0 {
			absent = append(absent, b)
		}
	}
	if len(absent) > 0 {
		return fmt.Errorf("%s not in %s: run `hack/build-envtest.sh && hack/build-envtest.sh node`", strings.Join(absent, ", "), o.BinDir)
	}
	return nil
}

func checkImages(o Options) error {
	for _, img := range append([]Image{o.SandboxImage}, o.Images...) {
		if img.Path == "" || img.Ref == "" {
			return errors.New("an image needs both Path (a tarball) and Ref (the name it holds); the sandbox image is required")
		}
		if _, err := os.Stat(img.Path); err != nil {
			return fmt.Errorf("image %s: %w (build the images with `make images`)", img.Ref, err)
		}
	}
	return nil
}

// lookPath finds a program on the node's PATH (sbin included, unlike many users' PATH).
func lookPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		st, err := os.Stat(name)
		if err != nil {
			return "", err
		}
		if st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s is not executable", name)
		}
		return name, nil
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}
