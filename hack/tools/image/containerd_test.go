package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestContainerdImport imports the three tarballs into a real containerd (Debian's, as the local
// test node runs it), the way a node gets them without a registry (`ctr -n k8s.io images import`),
// and runs each image. The containerd is a throwaway: its own config, root, state and socket
// under a temporary directory, stopped, unmounted and removed at the end.
func TestContainerdImport(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the containerd test needs root (containerd and runc): run `make test` as root")
	}
	for _, bin := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is missing: apt-get install containerd runc", bin)
		}
	}
	v := version(t)
	refs := map[string]string{
		"operator.tar":     operatorRepo + ":v" + v,
		"pause.tar":        "localhost/mlflow-token-operator/pause:v" + v,
		"training-job.tar": "localhost/mlflow-token-operator/training-job:v" + v,
	}
	dir := buildImages(t, "", "operator", "pause", "training-job") // cached in bin/images

	c := startContainerd(t)
	for file, ref := range refs {
		out := c.ctr(t, "images", "import", filepath.Join(dir, file))
		if !strings.Contains(out, ref) {
			t.Errorf("ctr images import %s did not register %s:\n%s", file, ref, out)
		}
	}
	names := strings.Fields(c.ctr(t, "images", "ls", "-q"))
	for _, ref := range refs {
		if !contains(names, ref) {
			t.Errorf("ctr images ls has no %s: %q", ref, names)
		}
	}
	t.Logf("ctr images ls:\n%s", c.ctr(t, "images", "ls"))

	t.Run("operator", func(t *testing.T) {
		checkUser(t, c, refs["operator.tar"], 65532)
		// No shell in the image: the manager itself shows that it starts (flags, then --help).
		out, err := c.run(t, refs["operator.tar"], "op", "/manager", "--help")
		if err != nil || !strings.Contains(out, "-leader-elect") {
			t.Errorf("/manager --help: %v\n%s", err, out)
		}
	})
	t.Run("training job", func(t *testing.T) {
		checkUser(t, c, refs["training-job.tar"], 65532)
		out, err := c.run(t, refs["training-job.tar"], "tj", "/opt/venv/bin/python", "-c",
			`import os, mlflow, mlflow_token_file_auth
from importlib.metadata import entry_points
print(os.getuid(), os.getgid(), mlflow.__version__, [e.name for e in entry_points(group="mlflow.request_auth_provider")])`)
		if err != nil || !strings.Contains(out, "65532 65532 3.") || !strings.Contains(out, "'token-file'") {
			t.Errorf("python in the training image: %v\n%s", err, out)
		}
		// The entrypoint is the job script: without its required flags it exits 2 with its usage.
		out, err = c.run(t, refs["training-job.tar"], "tj-entry")
		if code := exitCode(err); code != 2 || !strings.Contains(out, "usage: training_job.py") {
			t.Errorf("the default entrypoint: exit %d, want 2 with training_job.py's usage:\n%s", code, out)
		}
	})
	t.Run("pause", func(t *testing.T) {
		checkUser(t, c, refs["pause.tar"], 65535)
		// In the foreground: `ctr run` exits with the task's exit status.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		run := exec.CommandContext(ctx, "ctr", "-a", c.sock, "-n", "k8s.io", "run", "--rm", refs["pause.tar"], "pause")
		var out bytes.Buffer
		run.Stdout, run.Stderr = &out, &out
		if err := run.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(c.ctr(t, "tasks", "ls"), "RUNNING") {
			if time.Now().After(deadline) {
				t.Fatalf("the pause task is not running after 30 s:\n%s", out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.ctr(t, "tasks", "kill", "--signal", "SIGTERM", "pause")
		if err := run.Wait(); err != nil {
			t.Errorf("pause after SIGTERM: %v, want exit 0\n%s", err, out.String())
		}
	})
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

type containerd struct {
	dir, sock string
}

// startContainerd starts containerd with everything under a temporary directory and registers
// its teardown: stop it and the shims it started, unmount what it mounted, remove the directory.
func startContainerd(t *testing.T) *containerd {
	// Not t.TempDir(): its path holds the test name, and a unix socket path must stay short.
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock")}
	// The CRI plugin stays on, as on a node: it is what the kubelet asks for images, and it
	// indexes imported images (label io.cri-containerd.image=managed). No TCP listener.
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, exec.Command("containerd", "--config", filepath.Join(dir, "config.toml")), dir, "containerd", 15*time.Second, nil)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := exec.Command("ctr", "-a", c.sock, "version").Run(); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Fatalf("containerd did not answer within 30 s:\n%s", tail(string(log), 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *containerd) ctr(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ctr", append([]string{"-a", c.sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// run runs a container of ref to completion (ctr run --rm) and returns its output.
func (c *containerd) run(t testing.TB, ref, id string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", c.sock, "-n", "k8s.io", "run", "--rm", ref, id}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// checkUser checks the user containerd gives a container of ref (from the image config).
func checkUser(t testing.TB, c *containerd, ref string, want int) {
	t.Helper()
	id := "user-check"
	c.ctr(t, "containers", "create", ref, id)
	defer c.ctr(t, "containers", "delete", id)
	var spec struct {
		Process struct {
			User struct{ UID, GID int }
		}
	}
	if err := json.Unmarshal([]byte(c.ctr(t, "containers", "info", "--spec", id)), &spec); err != nil {
		t.Fatal(err)
	}
	if u := spec.Process.User; u.UID != want || u.GID != want {
		t.Errorf("%s runs as %d:%d, want %d:%d", ref, u.UID, u.GID, want, want)
	}
}

// pidsWithArgPrefix returns the processes that have an argument starting with prefix (a
// temporary directory of the test): the daemons and shims the test started, and no others.
func pidsWithArgPrefix(prefix string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(cmdline, []byte{0}) {
			if bytes.HasPrefix(a, []byte(prefix)) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// unmountUnder unmounts every mount point below dir, deepest first.
func unmountUnder(t testing.TB, dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Error(err)
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", p, err)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startDaemon starts cmd (a daemon whose state lives under dir) with its output in
// dir/<name>.log, and on cleanup stops it (SIGTERM, SIGKILL after grace), kills the processes it
// left behind (its shims outlive it by design; ours are those given a path under dir), unmounts
// and removes dir, runs after (nil: nothing), and shows the log's tail when the test failed.
func startDaemon(t *testing.T, cmd *exec.Cmd, dir, name string, grace time.Duration, after func()) {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(grace):
			_ = cmd.Process.Kill()
			<-waited
		}
		logf.Close()
		for _, pid := range pidsWithArgPrefix(dir + "/") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		unmountUnder(t, dir)
		if after != nil {
			after()
		}
		if t.Failed() {
			if log, err := os.ReadFile(logPath); err == nil {
				t.Logf("%s log (tail):\n%s", name, tail(string(log), 40))
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing %s: %v", dir, err)
		}
	})
}
