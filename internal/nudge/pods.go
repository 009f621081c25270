package nudge

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/consumers"
)

// This file answers "which pods consume this Secret, and can a nudge help them?" from the pods
// alone, and keeps the operator's pod cache small: only pods labelled as consumers, stripped down
// to what the answer needs.

// IndexSecrets indexes cached pods by the name of each Secret they reference (volume, projected
// volume source, env var, envFrom).
const IndexSecrets = "nudge.secretNames"

// Use is how a pod consumes a Secret. The rules live in internal/consumers, which the kubectl
// plugin shares, so that the pods it calls nudged are the ones nudged here.
type Use = consumers.Use

const (
	NotUsed      = consumers.NotUsed
	Mounted      = consumers.Mounted
	NotUpdatable = consumers.NotUpdatable
)

// SecretUse says how pod consumes the Secret called secret.
func SecretUse(pod *corev1.Pod, secret string) Use { return consumers.SecretUse(pod, secret) }

// secretNames lists the Secrets pod references, each once: the index's values.
func secretNames(pod *corev1.Pod) []string {
	var names []string
	add := func(n string) bool {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
		return false
	}
	for _, v := range pod.Spec.Volumes {
		consumers.VolumeSecrets(v, add)
	}
	for _, c := range consumers.RunningContainers(pod) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				add(e.ValueFrom.SecretKeyRef.Name)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				add(e.SecretRef.Name)
			}
		}
	}
	return names
}

// SecretsIndex is the index function of IndexSecrets.
func SecretsIndex(o client.Object) []string {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return nil
	}
	return secretNames(pod)
}

// Finished reports whether the pod's containers will not run again (or it is being deleted):
// nudging it is pointless.
func Finished(pod *corev1.Pod) bool { return consumers.Finished(pod) }

// CacheConfig is the pod cache of the operator: only pods labelled as consumers, stripped by
// StripPod.
func CacheConfig() cache.ByObject {
	return cache.ByObject{
		Label:     labels.SelectorFromSet(labels.Set{authv1alpha1.LabelConsumer: "true"}),
		Transform: StripPod,
	}
}

// StripPod is the cache's transform for pods: it keeps what SecretUse, the index and the nudge
// need (name, UID, the consumer label, deletion, phase; the volumes that carry Secrets, and per
// running container the mounts of those volumes and the env vars that read Secrets), and drops
// the rest (managed fields, other annotations and labels, images, commands, other env vars, the
// status). A typical pod shrinks from several KB to a few hundred bytes.
func StripPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
			CreationTimestamp: pod.CreationTimestamp, DeletionTimestamp: pod.DeletionTimestamp,
		},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}
	if v, ok := pod.Labels[authv1alpha1.LabelConsumer]; ok {
		out.Labels = map[string]string{authv1alpha1.LabelConsumer: v}
	}
	kept := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.Secret != nil:
			out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: v.Secret.SecretName}}})
			kept[v.Name] = true
		case v.Projected != nil:
			var sources []corev1.VolumeProjection
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					sources = append(sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{LocalObjectReference: s.Secret.LocalObjectReference}})
				}
			}
			if len(sources) > 0 {
				out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{
					Projected: &corev1.ProjectedVolumeSource{Sources: sources}}})
				kept[v.Name] = true
			}
		}
	}
	strip := func(c corev1.Container) (corev1.Container, bool) {
		s := corev1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy}
		for _, m := range c.VolumeMounts {
			if kept[m.Name] {
				s.VolumeMounts = append(s.VolumeMounts, corev1.VolumeMount{Name: m.Name, MountPath: m.MountPath, SubPath: m.SubPath, SubPathExpr: m.SubPathExpr})
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				s.Env = append(s.Env, corev1.EnvVar{Name: e.Name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: e.ValueFrom.SecretKeyRef.LocalObjectReference}}})
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				s.EnvFrom = append(s.EnvFrom, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: e.SecretRef.LocalObjectReference}})
			}
		}
		return s, len(s.VolumeMounts)+len(s.Env)+len(s.EnvFrom) > 0
	}
	for _, c := range pod.Spec.Containers {
		if s, ok := strip(c); ok {
			out.Spec.Containers = append(out.Spec.Containers, s)
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			continue
		}
		if s, ok := strip(c); ok {
			out.Spec.InitContainers = append(out.Spec.InitContainers, s)
		}
	}
	return out, nil
}
