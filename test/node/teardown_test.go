package node_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"
)

// TestKilledRunIsCleanedUp starts a second node in a child process (this test binary again), with
// a pod running, then kills that process with SIGKILL: no deferred call, no signal handler runs.
//   - reaper: the node's reaper must remove everything (processes, shims and pods, the namespaces
//     with their bridge, veths and iptables rules, mounts, cgroups, the scratch directory) and
//     release the slot;
//   - reaper killed too: what is left must be removed by the next run's cleanup (what Start runs
//     before it starts a node in that slot).
func TestKilledRunIsCleanedUp(t *testing.T) {
	t.Run("reaper", func(t *testing.T) {
		before := hostState()
		name, child := startChildNode(t)
		killed := time.Now()
		kill(t, child)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := node.WaitSlotFree(ctx, name); err != nil {
			t.Fatal(err)
		}
		t.Logf("The reaper removed node %s %s after the SIGKILL", name, time.Since(killed).Round(100*time.Millisecond))
		checkGone(t, name, before)
	})
	t.Run("reaper killed too", func(t *testing.T) {
		before := hostState()
		name, child := startChildNode(t)
		reaper := node.ReaperOf(name)
		if reaper == 0 {
			t.Fatalf("node %s has no reaper", name)
		}
		if err := syscall.Kill(reaper, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		kill(t, child)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := node.WaitSlotFree(ctx, name); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second) // what survives its owner keeps running: the pods, containerd, the kubelet
		if err := node.LeftoversOf(name); err == nil {
			t.Fatalf("nothing of node %s survived its owner and its reaper: this test cannot tell whether a later run cleans up", name)
		} else {
			t.Logf("Left by the killed run: %v", err)
		}
		var out strings.Builder
		if err := node.CleanLeftovers(&out); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		t.Logf("The next run's cleanup:\n%s", out.String())
		checkGone(t, name, before)
	})
}

// startChildNode starts the helper process and waits until its node runs a pod.
func startChildNode(t *testing.T) (string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1",
		"NODE_TEST_SANDBOX="+images.sandbox.Path+"="+images.sandbox.Ref,
		"NODE_TEST_PROBE="+images.probe.Path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if name, ok := strings.CutPrefix(line, "READY "); ok {
				ready <- name
			} else if !strings.HasPrefix(line, "[node ") {
				t.Logf("child: %s", line)
			}
		}
		close(ready)
	}()
	select {
	case name, ok := <-ready:
		if !ok {
			t.Fatal("the child process ended before its node was ready")
		}
		if err := node.LeftoversOf(name); err == nil {
			t.Fatalf("the child's node %s is running, yet nothing of it was found: the leftover check cannot see a node", name)
		}
		return name, cmd
	case <-time.After(4 * time.Minute):
		t.Fatal("the child's node did not get ready in 4 minutes")
	}
	return "", nil
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

// checkGone fails when anything of the node named name is left, or the host changed.
func checkGone(t *testing.T, name string, before map[string][]string) {
	t.Helper()
	if err := node.LeftoversOf(name); err != nil {
		t.Fatal(err)
	}
	after := hostState()
	if err := compareHostState(before, after, name); err != nil {
		t.Fatal(err)
	}
	t.Log("Host afterwards (the leftover checks; the suite's own node still runs):")
	for _, k := range globalHostChecks {
		t.Logf("  %-55s %d %v", k, len(after[k]), after[k])
	}
}

// helperProcess is the child of TestKilledRunIsCleanedUp: it starts a node with a pod, says
// READY, and waits to be killed.
func helperProcess() int {
	sandbox := strings.SplitN(os.Getenv("NODE_TEST_SANDBOX"), "=", 2)
	if len(sandbox) != 2 {
		fmt.Println("NODE_TEST_SANDBOX not set")
		return 2
	}
	ctx := context.Background()
	n, err := node.Start(ctx, node.Options{
		BinDir:       binDir(),
		SandboxImage: node.Image{Path: sandbox[0], Ref: sandbox[1]},
		Images:       []node.Image{{Path: os.Getenv("NODE_TEST_PROBE"), Ref: probeRef}},
		LogDir:       filepath.Join(repoRoot(), "bin", "node-logs", "killed-run"),
	})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	c := n.Client()
	if err := n.EnsureNamespace(ctx, "victim", restricted); err == nil {
		_, err = c.CoreV1().Secrets("victim").Create(ctx, secretWith("victim", "s", "v"), metav1.CreateOptions{})
		if err == nil {
			_, err = c.CoreV1().Pods("victim").Create(ctx, probePod("victim", "probe", "s", "-watch", "/etc/secret/value"), metav1.CreateOptions{})
		}
		if err == nil {
			err = waitRunning(ctx, c, "victim", "probe", 2*time.Minute)
		}
	}
	if err != nil {
		fmt.Println(err)
		_ = n.Stop()
		return 1
	}
	fmt.Printf("READY %s\n", n.Name())
	for {
		time.Sleep(time.Hour) // until killed
	}
}
