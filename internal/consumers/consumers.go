// Package consumers answers, from a pod object alone, "does this pod read the Secret, where, and
// can a nudge get a new token into it?". The operator's nudger (internal/nudge) and the kubectl
// plugin's inspect share it, so that what the plugin calls nudged is what the operator nudges.
package consumers

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// Use is how a pod consumes a Secret.
type Use int

const (
	// NotUsed: the pod does not read the Secret (or only in init containers that have run).
	NotUsed Use = iota
	// Mounted: a running container mounts the Secret's volume as a directory, which the kubelet
	// updates in place when it syncs the pod. A nudge makes that happen at once.
	Mounted
	// NotUpdatable: the pod reads the Secret only through environment variables or subPath mounts,
	// which never change in a running container. A nudge cannot help it.
	NotUpdatable
)

// SecretUse says how pod consumes the Secret called secret: what its running containers (not the
// init containers that ran before them) read, as Refs lists it.
func SecretUse(pod *corev1.Pod, secret string) Use {
	use := NotUsed
	for _, r := range Refs(pod, secret) {
		switch {
		case r.Init:
		case r.How == HowDirectory:
			return Mounted
		default:
			use = NotUpdatable
		}
	}
	return use
}

// carriers are the names of the pod's volumes that carry the Secret.
func carriers(pod *corev1.Pod, secret string) map[string]bool {
	volumes := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if VolumeSecrets(v, func(name string) bool { return name == secret }) {
			volumes[v.Name] = true
		}
	}
	return volumes
}

// VolumeSecrets calls f with each Secret the volume carries; it returns true as soon as f does.
func VolumeSecrets(v corev1.Volume, f func(string) bool) bool {
	if v.Secret != nil && f(v.Secret.SecretName) {
		return true
	}
	if v.Projected != nil {
		for _, s := range v.Projected.Sources {
			if s.Secret != nil && f(s.Secret.Name) {
				return true
			}
		}
	}
	return false
}

// RunningContainers are the containers that run alongside the workload: the regular ones and the
// sidecars (init containers with restartPolicy Always). Other init containers have finished
// before the workload starts, so what they read does not matter after a rotation.
func RunningContainers(pod *corev1.Pod) []corev1.Container {
	out := slices.Clone(pod.Spec.Containers)
	for _, c := range pod.Spec.InitContainers {
		if isSidecar(c) {
			out = append(out, c)
		}
	}
	return out
}

func isSidecar(c corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// Finished reports whether the pod's containers will not run again (or it is being deleted):
// nudging it is pointless.
func Finished(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}
