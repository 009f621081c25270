package consumers

import corev1 "k8s.io/api/core/v1"

// How a container reads a Secret.
const (
	// HowDirectory: a volume mounted as a directory; the kubelet updates its files in place.
	HowDirectory = "directory"
	// HowSubPath: a single file of the volume (subPath or subPathExpr); never updated.
	HowSubPath = "subPath"
	// HowEnv: an environment variable from one key (valueFrom.secretKeyRef); fixed at start.
	HowEnv = "env"
	// HowEnvFrom: environment variables from all keys (envFrom.secretRef); fixed at start.
	HowEnvFrom = "envFrom"
)

// Ref is one place where a container of a pod reads a Secret, for people to read (SecretUse is
// the verdict the operator acts on).
type Ref struct {
	Container string `json:"container"`
	// Init: an init container that runs before the workload (not a sidecar).
	Init bool   `json:"init,omitempty"`
	How  string `json:"how"`
	// Where is the mount path (directory, subPath), the variable's name (env) or the variables'
	// prefix (envFrom, often empty).
	Where string `json:"where,omitempty"`
}

// Refs lists where the pod's containers (init containers too) read the Secret called secret.
func Refs(pod *corev1.Pod, secret string) []Ref {
	volumes := carriers(pod, secret)
	var out []Ref
	walk := func(c corev1.Container, init bool) {
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				continue
			}
			how := HowDirectory
			if m.SubPath != "" || m.SubPathExpr != "" {
				how = HowSubPath
			}
			out = append(out, Ref{Container: c.Name, Init: init, How: how, Where: m.MountPath})
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == secret {
				out = append(out, Ref{Container: c.Name, Init: init, How: HowEnv, Where: e.Name})
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil && e.SecretRef.Name == secret {
				out = append(out, Ref{Container: c.Name, Init: init, How: HowEnvFrom, Where: e.Prefix})
			}
		}
	}
	for _, c := range pod.Spec.InitContainers {
		walk(c, !isSidecar(c))
	}
	for _, c := range pod.Spec.Containers {
		walk(c, false)
	}
	return out
}
