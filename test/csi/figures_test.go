package csi

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// testFigures: the plugin's memory per 100 volumes (one pod with 100 CSI volumes) and the time
// a volume adds to a pod's start.
func testFigures(t *testing.T) {
	before := pluginRSS(t)
	p := watcher(bulk, "bulk")
	p.Spec.Volumes = nil
	p.Spec.Containers[0].VolumeMounts = nil
	for i := 0; i < 100; i++ {
		name := fmt.Sprintf("v%d", i)
		p.Spec.Volumes = append(p.Spec.Volumes, csiVolume(name, bulk.ClientID))
		p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: name, MountPath: "/tokens/" + name, ReadOnly: true})
	}
	p.Spec.Containers[0].Args = []string{"-every", "1s", "/tokens/v0/token"}
	start := time.Now()
	createPod(t, p)
	waitRunning(t, p.Namespace, p.Name, 5*time.Minute)
	podStart := time.Since(start)
	time.Sleep(3 * time.Second)
	after := pluginRSS(t)
	var took []time.Duration
	for _, l := range pluginLog(t, false) {
		if l.Msg == "Published a token" && l.Pod == bulk.Namespace+"/bulk" {
			if d, err := time.ParseDuration(l.Took); err == nil {
				took = append(took, d)
			}
		}
	}
	if len(took) != 100 {
		t.Errorf("%d publishes logged for the pod's 100 volumes", len(took))
	}
	figures.Figure("plugin memory (RSS): %.1f MiB before, %.1f MiB with 100 more volumes: %.1f MiB per 100 volumes", mib(before), mib(after), mib(after-before))
	figures.Figure("publish time of a volume (Keycloak grant, files, record): p50 %s, p99 %s over %d; the pod with 100 volumes was Running %.1fs after its creation",
		percentile(took, 0.5).Round(time.Millisecond), percentile(took, 0.99).Round(time.Millisecond), len(took), podStart.Seconds())
	_ = deletePod(p.Namespace, p.Name)

	// A pod's start with one CSI volume and without (the same reader image, an emptyDir).
	with := startTime(t, watcher(alpha, "start-with"))
	without := watcher(alpha, "start-without")
	without.Spec.Volumes = []corev1.Volume{{Name: "mlflow", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	wo := startTime(t, without)
	figures.Figure("pod start (creation to Running, 0.2 s polling): %.1fs with the CSI volume, %.1fs without", with.Seconds(), wo.Seconds())
	waitGone(t, p.Namespace, p.Name, 3*time.Minute)
}

func startTime(t *testing.T, p *corev1.Pod) time.Duration {
	start := time.Now()
	createPod(t, p)
	waitRunning(t, p.Namespace, p.Name, 2*time.Minute)
	d := time.Since(start)
	_ = deletePod(p.Namespace, p.Name)
	return d
}

// pluginRSS is the resident memory of the node plugin's process (found on this machine by its
// command line), in bytes.
func pluginRSS(t *testing.T) int64 {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmd, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.Contains(cmd, []byte("csi-node")) || !bytes.Contains(cmd, []byte("--kubelet-root-dir="+kubeletRoot())) {
			continue
		}
		st, err := os.ReadFile(filepath.Join(d, "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(st), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	t.Fatal("the node plugin's process was not found")
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
