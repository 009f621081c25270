package fault

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/scrape"
)

// Operator is the operator binary running as a child process.
type Operator struct {
	Name        string
	MetricsAddr string
	LogPath     string
	cmd         *exec.Cmd
	done        chan struct{}
	exitErr     error
}

var (
	opsMu sync.Mutex
	ops   []*Operator
)

// operatorArgs are the flags every test uses; extra ones are appended.
func operatorArgs(metricsAddr string, namespaces []string, extra ...string) []string {
	args := []string{
		"--kubeconfig=" + kubeconfigPath,
		"--metrics-bind-address=" + metricsAddr,
		"--metrics-secure=false", // scraped over loopback by the harness
		"--health-probe-bind-address=0",
		"--min-retry-interval=" + minRetry.String(),
		"--max-retry-interval=" + maxRetry.String(),
		"--keycloak-timeout=" + keycloakTimeout.String(),
		"--revocation-timeout=10s",
		"--concurrency=4",
		"--namespaces=" + strings.Join(namespaces, ","),
		"--zap-log-level=info",
		"--allow-insecure-http", // the test Keycloak serves plain HTTP on 127.0.0.1
	}
	return append(args, extra...)
}

// startOperator starts the operator binary; it is killed at the end of the test run at the latest.
func startOperator(t *testing.T, name string, namespaces []string, extra ...string) *Operator {
	t.Helper()
	o := &Operator{Name: name, MetricsAddr: freeAddr(t), LogPath: filepath.Join(workDir, t.Name()+"-"+name+".log"), done: make(chan struct{})}
	_ = os.MkdirAll(filepath.Dir(o.LogPath), 0o755)
	logf, err := os.OpenFile(o.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	o.cmd = exec.Command(operatorBin, operatorArgs(o.MetricsAddr, namespaces, extra...)...)
	o.cmd.Stdout, o.cmd.Stderr = logf, logf
	o.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := o.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	go func() {
		o.exitErr = o.cmd.Wait()
		logf.Close()
		close(o.done)
	}()
	opsMu.Lock()
	ops = append(ops, o)
	opsMu.Unlock()
	t.Cleanup(func() { o.Kill() })
	return o
}

// Kill sends SIGKILL and waits for the exit.
func (o *Operator) Kill() {
	select {
	case <-o.done:
		return
	default:
	}
	_ = o.cmd.Process.Signal(syscall.SIGKILL)
	<-o.done
}

// Alive reports whether the process is still running.
func (o *Operator) Alive() bool {
	select {
	case <-o.done:
		return false
	default:
		return true
	}
}

// Logs returns the process's log output so far.
func (o *Operator) Logs() string {
	b, _ := os.ReadFile(o.LogPath)
	return string(b)
}

func stopAllOperators() {
	opsMu.Lock()
	defer opsMu.Unlock()
	for _, o := range ops {
		o.Kill()
	}
}

// Metrics scrapes /metrics: series (name plus labels, as printed) to value.
func (o *Operator) Metrics() (scrape.Metrics, error) {
	return scrape.Get(o.MetricsAddr, 5*time.Second)
}

// waitMetrics waits until /metrics answers (the process is up).
func (o *Operator) waitMetrics(t *testing.T, timeout time.Duration) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m, err := o.Metrics()
		if err == nil {
			return m
		}
		if !o.Alive() {
			t.Fatalf("operator %s exited: %v\n%s", o.Name, o.exitErr, tail(o.Logs(), 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("operator %s: /metrics did not answer within %s: %v", o.Name, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }
