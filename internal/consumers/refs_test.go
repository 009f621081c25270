package consumers

// SecretUse's table of pods is in internal/nudge (pods_test.go), which calls it through its
// wrapper; this tests what Refs lists for people and that SecretUse agrees with it.

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestRefs(t *testing.T) {
	const secret = "tok"
	vol := func(name, s string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: s}}}
	}
	ref := func(name string) *corev1.SecretKeySelector {
		return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: "token"}
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		Volumes: []corev1.Volume{vol("a", secret), vol("b", "other"), {Name: "p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: secret}}}}}}}},
		InitContainers: []corev1.Container{
			{Name: "fetch", VolumeMounts: []corev1.VolumeMount{{Name: "a", MountPath: "/init"}}},
			{Name: "proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways), EnvFrom: []corev1.EnvFromSource{{Prefix: "KC_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: secret}}}}},
		},
		Containers: []corev1.Container{{Name: "train",
			VolumeMounts: []corev1.VolumeMount{{Name: "b", MountPath: "/other"}, {Name: "p", MountPath: "/p"}, {Name: "a", MountPath: "/t/token", SubPath: "token"}},
			Env:          []corev1.EnvVar{{Name: "MLFLOW_TRACKING_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref(secret)}}, {Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref("other")}}},
		}},
	}}
	got := fmt.Sprint(Refs(pod, secret))
	want := "[{fetch true directory /init} {proxy false envFrom KC_} {train false directory /p} {train false subPath /t/token} {train false env MLFLOW_TRACKING_TOKEN}]"
	if got != want {
		t.Errorf("Refs\n got %s\nwant %s", got, want)
	}
	if SecretUse(pod, secret) != Mounted {
		t.Error("a directory mount of a projected volume in a running container is Mounted")
	}
	pod.Spec.Containers[0].VolumeMounts = pod.Spec.Containers[0].VolumeMounts[2:]
	if SecretUse(pod, secret) != NotUpdatable {
		t.Errorf("subPath, env and a sidecar's envFrom: %v", Refs(pod, secret))
	}
	pod.Spec.Containers, pod.Spec.InitContainers = nil, pod.Spec.InitContainers[:1]
	if SecretUse(pod, secret) != NotUsed || len(Refs(pod, secret)) != 1 {
		t.Errorf("only an init container that ran before the workload: %v", Refs(pod, secret))
	}
	if Refs(pod, "absent") != nil {
		t.Error("refs of a Secret the pod does not read")
	}
}
