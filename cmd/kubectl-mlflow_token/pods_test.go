package main

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCSIPodTable(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	csiVol := func(driver string) corev1.Volume {
		return corev1.Volume{Name: "mlflow", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: driver,
			VolumeAttributes: map[string]string{"issuerRef": "ClusterKeycloakIssuer/mlflow", "clientID": "team-a-training"}}}}
	}
	pod := func(name string, vols ...corev1.Volume) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", CreationTimestamp: metav1.NewTime(now.Add(-time.Hour))},
			Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "trainer", Volumes: vols}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	}
	tab := csiPodTable([]corev1.Pod{
		pod("z-train", csiVol(defaultCSIDriver)),
		pod("plain", corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}),
		pod("other-driver", csiVol("secrets-store.csi.k8s.io")),
		pod("a-train", csiVol(defaultCSIDriver)),
	}, defaultCSIDriver, now)
	if len(tab.Rows) != 2 {
		t.Fatalf("%d rows, want the two pods with the driver's volume", len(tab.Rows))
	}
	want := []any{"a-train", "n1", "trainer", "ClusterKeycloakIssuer/mlflow", "team-a-training", "Running", "60m"}
	for i, c := range tab.Rows[0].Cells {
		if c != want[i] {
			t.Errorf("cell %d = %v, want %v", i, c, want[i])
		}
	}
}
