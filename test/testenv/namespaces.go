package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// namespaceController is kube-controller-manager running only the controllers that delete a
// namespace's contents (envtest runs none): the namespace controller, which deletes everything in
// a namespace being deleted in an order of its own (Secrets may well go before the resources that
// reference them), and the garbage collector, which deletes what the deleted objects owned.
type namespaceController struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
}

// startNamespaceController starts kube-controller-manager (built by `hack/build-envtest.sh
// servers` next to kube-apiserver) against the API server of kubeconfig.
func startNamespaceController(kubeconfig []byte) (*namespaceController, error) {
	bin := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s is missing: run `hack/build-envtest.sh servers` (make test-servers does)", bin)
	}
	dir, err := os.MkdirTemp("", "mto-kcm-")
	if err != nil {
		return nil, err
	}
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--controllers=namespace-controller,garbage-collector-controller", "--leader-elect=false", "--secure-port=0",
		"--use-service-account-credentials=false", "--concurrent-namespace-syncs=5")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n := &namespaceController{cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(n.done) }()
	select {
	case <-n.done:
		b, _ := os.ReadFile(log.Name())
		return nil, fmt.Errorf("kube-controller-manager exited at once: %s", tail(string(b), 2000))
	case <-time.After(time.Second):
	}
	return n, nil
}

func (n *namespaceController) stop() {
	if n == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	os.RemoveAll(n.dir)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
