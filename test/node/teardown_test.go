package node_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"
)

// TestKilledRunIsCleanedUp starts a second node in a child process (this test binary again), with
// a pod running, then kills that process with SIGKILL: no deferred call, no signal handler runs.
// The node's reaper must remove everything (processes, shims and pods, the namespaces with their
// bridge, veths and iptables rules, mounts, cgroups, the scratch directory), and release the slot.
func TestKilledRunIsCleanedUp(t *testing.T) {
	before := hostState()
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
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			t.Logf("child: %s", line)
			if name, ok := strings.CutPrefix(line, "READY "); ok {
				ready <- name
			}
		}
		close(ready)
	}()
	var name string
	select {
	case n, ok := <-ready:
		if !ok {
			t.Fatal("the child process ended before its node was ready")
		}
		name = n
	case <-time.After(4 * time.Minute):
		t.Fatal("the child's node did not get ready in 4 minutes")
	}
	if err := node.LeftoversOf(name); err == nil {
		t.Fatalf("the child's node %s is running, yet nothing of it was found: the leftover check cannot see a node", name)
	} else {
		t.Logf("While the child runs: %v", err)
	}

	killed := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := node.WaitSlotFree(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Logf("The reaper removed node %s %s after the SIGKILL", name, time.Since(killed).Round(100*time.Millisecond))
	if err := node.LeftoversOf(name); err != nil {
		t.Fatal(err)
	}
	after := hostState()
	if err := compareHostState(before, after); err != nil {
		t.Fatal(err)
	}
	t.Log("Host after the killed run (the leftover checks; the suite's own node still runs):")
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
