package node_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// propagationPods is how many pods (each with its own Secret) one round measures in parallel:
// each pod's sync runs on its own timer, so the delays of one round are independent samples.
const propagationPods = 24

// syncFrequency is the kubelet's default, which the suite's node keeps.
const syncFrequency = time.Minute

// nudgeAnnotation is what the measurement patches on a pod right after updating its Secret.
const nudgeAnnotation = "test.mlflow-token-operator.io/secret-version"

// TestSecretVolumePropagation measures how long a Secret update takes to reach the file a pod
// mounts, with the kubelet's default settings (syncFrequency 1m, Secret change detection by
// watch): once with the update alone, and twice with a patch of a pod annotation right after the
// update (the kubelet syncs a pod at once when the pod object changes, and rewrites its volumes).
// Each delay runs from the API server's answer to the Secret update until the probe in the pod
// read the new content (same clock: the pod runs on this machine). The updates of the first round
// are spread over one syncFrequency, so that they land at every point of the pods' sync cycles
// (pods started together sync in step; updating all at once would measure one phase only).
// It prints a table; it asserts only that every update arrived.
func TestSecretVolumePropagation(t *testing.T) {
	// Side by side with the other measurement (each in its own namespace, pods and Secrets): both
	// mostly wait for kubelet syncs. The tests that compare the host's state are not parallel and
	// run first.
	t.Parallel()
	ctx := context.Background()
	c := theNode.Client()
	const ns = "propagation"
	if err := theNode.EnsureNamespace(ctx, ns, restricted); err != nil {
		t.Fatal(err)
	}
	name := func(i int) string { return fmt.Sprintf("p%02d", i) }
	value := func(round, i int) string { return fmt.Sprintf("round %d of %s", round, name(i)) }

	start := time.Now()
	for i := 0; i < propagationPods; i++ {
		if _, err := c.CoreV1().Secrets(ns).Create(ctx, secretWith(ns, name(i), value(0, i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().Pods(ns).Create(ctx, probePod(ns, name(i), name(i), "-watch", "/etc/secret/value"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < propagationPods; i++ {
		if err := waitRunning(ctx, c, ns, name(i), 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := collect(ctx, c, ns, propagationPods, name, func(i int) string { return value(0, i) }, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pods running and reading their Secrets after %s", propagationPods, time.Since(start).Round(100*time.Millisecond))

	// The figures are only "the default" if the kubelet runs with it: ask the kubelet itself.
	raw, err := c.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", theNode.Name(), "proxy", "configz").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var configz struct {
		KubeletConfig struct {
			SyncFrequency string `json:"syncFrequency"`
		} `json:"kubeletconfig"`
	}
	if err := json.Unmarshal(raw, &configz); err != nil {
		t.Fatal(err)
	}
	if configz.KubeletConfig.SyncFrequency != syncFrequency.String() {
		t.Fatalf("the kubelet runs with syncFrequency %q, the measurement is about the default %s", configz.KubeletConfig.SyncFrequency, syncFrequency)
	}

	type result struct {
		mode   string
		delays []time.Duration
	}
	var results []result
	var load []string
	for _, r := range []struct {
		round  int
		nudge  bool
		spread time.Duration
	}{{1, false, syncFrequency}, {2, true, 0}, {3, true, 0}} {
		load = append(load, loadAverage())
		updated, err := update(ctx, c, ns, propagationPods, name, func(i int) string { return value(r.round, i) }, r.nudge, r.spread)
		if err != nil {
			t.Fatal(err)
		}
		// 1.5 x syncFrequency is the latest a periodic sync comes; the rest is slack for a busy machine.
		delays, err := collect(ctx, c, ns, propagationPods, name, func(i int) string { return value(r.round, i) }, updated, 4*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		mode := "Secret update only"
		if r.nudge {
			mode = "Secret update + pod annotation patch"
		}
		if len(results) > 0 && results[len(results)-1].mode == mode {
			results[len(results)-1].delays = append(results[len(results)-1].delays, delays...)
		} else {
			results = append(results, result{mode, delays})
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Secret volume propagation through the kubelet (syncFrequency %s, the default; %d pods per round;\n", syncFrequency, propagationPods)
	fmt.Fprintf(&b, "delay = Secret update answered -> new content read in the pod; load averages at the rounds: %s):\n", strings.Join(load, "; "))
	fmt.Fprintf(&b, "  %-38s %4s %9s %9s %9s %9s\n", "mode", "n", "p50", "p99", "min", "max")
	for _, r := range results {
		d := append([]time.Duration(nil), r.delays...)
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		fmt.Fprintf(&b, "  %-38s %4d %9s %9s %9s %9s\n", r.mode, len(d),
			fmtDelay(percentile(d, 50)), fmtDelay(percentile(d, 99)), fmtDelay(d[0]), fmtDelay(d[len(d)-1]))
	}
	t.Log("\n" + b.String())
}

// update writes the new value into each Secret (and, with nudge, patches its pod right after),
// spacing the updates evenly over spread, and returns when each Secret update was answered.
func update(ctx context.Context, c kubernetes.Interface, ns string, n int, name func(int) string, value func(int) string, nudge bool, spread time.Duration) ([]time.Time, error) {
	updated := make([]time.Time, n)
	begin := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(begin.Add(spread * time.Duration(i) / time.Duration(n))))
		secretPatch, _ := json.Marshal(map[string]any{"data": map[string]string{"value": base64.StdEncoding.EncodeToString([]byte(value(i)))}})
		if _, err := c.CoreV1().Secrets(ns).Patch(ctx, name(i), types.MergePatchType, secretPatch, metav1.PatchOptions{}); err != nil {
			return nil, err
		}
		updated[i] = time.Now()
		if nudge {
			podPatch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{nudgeAnnotation: value(i)}}})
			if _, err := c.CoreV1().Pods(ns).Patch(ctx, name(i), types.MergePatchType, podPatch, metav1.PatchOptions{}); err != nil {
				return nil, err
			}
		}
	}
	return updated, nil
}

// collect reads the pods' logs until each has seen its value, and returns each delay from
// updated (when updated is nil, it only waits).
func collect(ctx context.Context, c kubernetes.Interface, ns string, n int, name func(int) string, value func(int) string, updated []time.Time, timeout time.Duration) ([]time.Duration, error) {
	delays := make([]time.Duration, n)
	seen := make([]bool, n)
	err := waitFor(timeout, 500*time.Millisecond, func() error {
		var mu sync.Mutex
		var wg sync.WaitGroup
		var errs []error
		for i := 0; i < n; i++ {
			if seen[i] {
				continue
			}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				log, err := podLog(ctx, c, ns, name(i))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				if at, ok := seenAt(log, value(i)); ok {
					seen[i] = true
					if updated != nil {
						delays[i] = at.Sub(updated[i])
					}
				}
			}(i)
		}
		wg.Wait()
		var missing []string
		for i := 0; i < n; i++ {
			if !seen[i] {
				missing = append(missing, name(i))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d pods have not read their new Secret content (%s); log errors: %v", len(missing), n, strings.Join(missing, " "), errs)
		}
		return nil
	})
	return delays, err
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// loadAverage is the machine's 1-minute load average (others share it: figures vary with it).
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(data))[0]
}

func fmtDelay(d time.Duration) string {
	if d < 10*time.Second && d > -10*time.Second {
		return fmt.Sprintf("%.3fs", d.Seconds())
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}
