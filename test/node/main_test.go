package node_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/node/ociimage"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// The suite runs on one node, started once (about 15-30 s).
var (
	theNode  *node.Node
	probeRef = "localhost/mlflow-token-operator/probe:test"
	images   imageSet
)

// pauseRef is the sandbox image `make images` builds into bin/images/pause.tar.
var pauseRef = "localhost/mlflow-token-operator/pause:" + testenv.ImageTag()

type imageSet struct {
	sandbox node.Image
	probe   node.Image
}

// helperEnv makes the test binary a node-owning process that the killed-run test kills.
const helperEnv = "NODE_TEST_HELPER_PROCESS"

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if os.Getenv(helperEnv) != "" {
		return helperProcess()
	}
	if err := node.Preflight(node.Options{BinDir: binDir()}); err != nil {
		fmt.Printf("FAIL: the node cannot run on this machine: %v\n", err)
		return 1
	}
	hostBefore = hostState()
	before := hostBefore
	var err error
	images, err = buildImages()
	if err != nil {
		fmt.Printf("FAIL: building the test images: %v\n", err)
		return 1
	}
	logDir := filepath.Join(repoRoot(), "bin", "node-logs")
	_ = os.RemoveAll(logDir)
	theNode, err = node.Start(context.Background(), node.Options{
		BinDir:       binDir(),
		SandboxImage: images.sandbox,
		Images:       []node.Image{images.probe},
		LogDir:       logDir,
	})
	if err != nil {
		fmt.Printf("FAIL: %v\n(component logs: %s)\n", err, logDir)
		return 1
	}
	code := m.Run()
	if err := theNode.Healthy(); err != nil { // a component that died under the tests is a failure too
		fmt.Printf("FAIL: %v\n", err)
		code = 1
	}
	if code != 0 {
		theNode.DumpLogs(os.Stdout, 20)
	}
	if err := theNode.Stop(); err != nil {
		fmt.Printf("FAIL: %v\n", err)
		code = 1
	}
	after := hostState()
	if err := compareHostState(before, after, theNode.Name()); err != nil {
		fmt.Printf("FAIL: %v\n", err)
		code = 1
	}
	fmt.Println("Host after the node stopped (the leftover checks; each count must be as before the node):")
	for _, k := range sortedKeys(after) {
		fmt.Printf("  %-55s before %d, after %d\n", k, len(before[k]), len(after[k]))
	}
	return code
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func binDir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), "bin", "k8s")
}

// buildImages builds the probe (test/node/probe) into an image, and picks the sandbox image:
// bin/images/pause.tar when `make images` has built it, else the probe (its -pause mode).
func buildImages() (imageSet, error) {
	dir := filepath.Join(repoRoot(), "bin", "node-images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return imageSet{}, err
	}
	bin := filepath.Join(dir, "probe")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./node/probe")
	cmd.Dir = filepath.Join(repoRoot(), "test") // the test module
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return imageSet{}, fmt.Errorf("go build ./node/probe (test module): %v: %s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return imageSet{}, err
	}
	tarball := filepath.Join(dir, "probe.tar")
	if err := ociimage.Write(tarball, probeRef, []ociimage.File{{Path: "/probe", Mode: 0o755, Data: data}},
		ociimage.Config{Entrypoint: []string{"/probe"}, Cmd: []string{"-pause"}, User: "65532:65532"}); err != nil {
		return imageSet{}, err
	}
	set := imageSet{probe: node.Image{Path: tarball, Ref: probeRef}, sandbox: node.Image{Path: tarball, Ref: probeRef}}
	if pause := filepath.Join(repoRoot(), "bin", "images", "pause.tar"); fileExists(pause) {
		set.sandbox = node.Image{Path: pause, Ref: pauseRef}
	} else {
		fmt.Printf("Sandbox image: the probe (bin/images/pause.tar not built; `make images` builds it)\n")
	}
	return set, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// hostBefore is the host's state before the suite's node started.
var hostBefore map[string][]string

// globalHostChecks are the checks that no running node may change either (the others list what
// is named after a slot: the link, cgroups and scratch directory exist while a node runs).
var globalHostChecks = []string{
	"mounts (findmnt: kubelet|containerd|netns|mtonode)",
	"bridges (ip link show type bridge)",
	"network namespaces (ip netns)",
	"iptables rules (KUBE-*, CNI-*)",
}

// hostState is what the brief's leftover checks look at on the host: mounts of kubelet,
// containerd or network namespaces, bridges, named network namespaces, the iptables rules of
// kube-proxy and the CNI plugins, and anything named after a node slot. The node keeps all of
// these inside its own namespaces, so none of them may change on the host.
func hostState() map[string][]string {
	lines := func(name string, args ...string) []string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		var res []string
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				res = append(res, l)
			}
		}
		return res
	}
	grep := func(in []string, words ...string) []string {
		var res []string
		for _, l := range in {
			for _, w := range words {
				if strings.Contains(l, w) {
					res = append(res, l)
					break
				}
			}
		}
		sort.Strings(res)
		return res
	}
	firstField := func(in []string) []string {
		for i, l := range in {
			in[i] = strings.Fields(l)[0]
		}
		return in
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/mtonode-*")
	return map[string][]string{
		"mounts (findmnt: kubelet|containerd|netns|mtonode)": grep(lines("findmnt", "-rn", "-o", "TARGET,SOURCE,FSTYPE"), "kubelet", "containerd", "netns", "mtonode"),
		"bridges (ip link show type bridge)":                 firstField(grep(lines("ip", "-o", "link", "show", "type", "bridge"), ":")),
		"network namespaces (ip netns)":                      lines("ip", "netns", "list"),
		"iptables rules (KUBE-*, CNI-*)":                     grep(append(lines("iptables-save"), lines("ip6tables-save")...), "KUBE", "CNI-"),
		"links named mtonode-*":                              grep(lines("ip", "-o", "link"), "mtonode"),
		"cgroups named mtonode-*":                            cgroups,
		"directories /tmp/mtonode-*":                         globs("/tmp/mtonode-*"),
	}
}

func globs(pattern string) []string { m, _ := filepath.Glob(pattern); return m }

// compareHostState fails when the host has something now that it did not have before: any change
// of the global checks, and anything named after one of the given slots (other slots may belong
// to a node of another test run on this machine).
func compareHostState(before, after map[string][]string, slots ...string) error {
	global := map[string]bool{}
	for _, k := range globalHostChecks {
		global[k] = true
	}
	var problems []string
	for _, k := range sortedKeys(after) {
		had := map[string]bool{}
		for _, l := range before[k] {
			had[l] = true
		}
		var added []string
		for _, l := range after[k] {
			if !had[l] && (global[k] || namesSlot(l, slots)) {
				added = append(added, l)
			}
		}
		if len(added) > 0 {
			problems = append(problems, fmt.Sprintf("%s: %s", k, strings.Join(added, " | ")))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("the node left things on the host:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// namesSlot tells whether line names one of the slots (mtonode-1, not mtonode-10).
func namesSlot(line string, slots []string) bool {
	for _, s := range slots {
		if regexp.MustCompile(regexp.QuoteMeta(s) + `\b`).MatchString(line) {
			return true
		}
	}
	return false
}

func sortedKeys(s map[string][]string) []string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// waitFor polls f every interval until it returns nil or the timeout passes.
func waitFor(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

// The leftover check itself: it must see what a node could leave, and only this run's slots.
func TestCompareHostState(t *testing.T) {
	before := map[string][]string{globalHostChecks[1]: {"docker0"}, "links named mtonode-*": {}}
	for _, c := range []struct {
		after map[string][]string
		slots []string
		fail  bool
	}{
		{map[string][]string{globalHostChecks[1]: {"docker0"}}, nil, false},
		{map[string][]string{globalHostChecks[1]: {"docker0", "cni0"}}, nil, true},
		{map[string][]string{"links named mtonode-*": {"7: mtonode-2@if2: <UP>"}}, []string{"mtonode-1"}, false},
		{map[string][]string{"links named mtonode-*": {"7: mtonode-1@if2: <UP>"}}, []string{"mtonode-1"}, true},
		{map[string][]string{"cgroups named mtonode-*": {"/sys/fs/cgroup/pids/mtonode-10"}}, []string{"mtonode-1"}, false},
	} {
		if err := compareHostState(before, c.after, c.slots...); (err != nil) != c.fail {
			t.Errorf("after %v, slots %v: error %v, want failure %v", c.after, c.slots, err, c.fail)
		}
	}
}
