package nudge

import (
	"encoding/json"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

const tokenSecret = "mlflow-token"

func secretVolume(name, secret string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret, DefaultMode: ptr.To[int32](0o400)}}}
}

func projectedVolume(name string, secrets ...string) corev1.Volume {
	v := corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
		{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
	}}}}
	for _, s := range secrets {
		v.Projected.Sources = append(v.Projected.Sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: s}}})
	}
	return v
}

func mount(volume, subPath string) corev1.VolumeMount {
	return corev1.VolumeMount{Name: volume, MountPath: "/var/run/secrets/mlflow", SubPath: subPath, ReadOnly: true}
}

func envFromSecret(secret string) corev1.EnvVar {
	return corev1.EnvVar{Name: "MLFLOW_TRACKING_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "MLFLOW_TRACKING_TOKEN"}}}
}

// pod builds a labelled consumer pod with the given volumes and one container "train".
func pod(name string, volumes []corev1.Volume, c corev1.Container) *corev1.Pod {
	c.Name, c.Image, c.Command = "train", "registry.example.com/train:1", []string{"python", "train.py"}
	c.Env = append(c.Env, corev1.EnvVar{Name: "EPOCHS", Value: "10"})
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", UID: types.UID("uid-" + name), ResourceVersion: "7",
			Labels:        map[string]string{authv1alpha1.LabelConsumer: "true", "app": "train", "batch.kubernetes.io/job-name": "train"},
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"a":"large blob"}`},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", FieldsType: "FieldsV1"}}},
		Spec: corev1.PodSpec{
			Volumes:    append([]corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}, volumes...),
			Containers: []corev1.Container{c},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.7", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

// The pods of the table: how each consumes tokenSecret.
var podCases = []struct {
	pod  *corev1.Pod
	want Use
}{
	{pod("volume", []corev1.Volume{secretVolume("tok", tokenSecret)}, corev1.Container{VolumeMounts: []corev1.VolumeMount{mount("data", ""), mount("tok", "")}}), Mounted},
	{pod("projected", []corev1.Volume{projectedVolume("tok", "other", tokenSecret)}, corev1.Container{VolumeMounts: []corev1.VolumeMount{mount("tok", "")}}), Mounted},
	{pod("subpath-only", []corev1.Volume{secretVolume("tok", tokenSecret)}, corev1.Container{VolumeMounts: []corev1.VolumeMount{mount("tok", "token")}}), NotUpdatable},
	{pod("subpathexpr-only", []corev1.Volume{secretVolume("tok", tokenSecret)}, corev1.Container{VolumeMounts: []corev1.VolumeMount{{Name: "tok", MountPath: "/t", SubPathExpr: "$(POD)"}}}), NotUpdatable},
	{pod("env-only", nil, corev1.Container{Env: []corev1.EnvVar{envFromSecret(tokenSecret)}}), NotUpdatable},
	{pod("envfrom-only", nil, corev1.Container{EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: tokenSecret}}}}}), NotUpdatable},
	{pod("env-and-volume", []corev1.Volume{secretVolume("tok", tokenSecret)}, corev1.Container{Env: []corev1.EnvVar{envFromSecret(tokenSecret)}, VolumeMounts: []corev1.VolumeMount{mount("tok", "")}}), Mounted},
	{pod("subpath-and-directory", []corev1.Volume{secretVolume("tok", tokenSecret)}, corev1.Container{VolumeMounts: []corev1.VolumeMount{mount("tok", "token"), {Name: "tok", MountPath: "/dir"}}}), Mounted},
	{pod("declared-not-mounted", []corev1.Volume{secretVolume("tok", tokenSecret)}, corev1.Container{}), NotUsed},
	{pod("other-secret", []corev1.Volume{secretVolume("tok", "other")}, corev1.Container{VolumeMounts: []corev1.VolumeMount{mount("tok", "")}, Env: []corev1.EnvVar{envFromSecret("other")}}), NotUsed},
	{func() *corev1.Pod { // a sidecar (restartable init container) that mounts it
		p := pod("sidecar", []corev1.Volume{secretVolume("tok", tokenSecret)}, corev1.Container{})
		p.Spec.InitContainers = []corev1.Container{{Name: "token-proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways), VolumeMounts: []corev1.VolumeMount{mount("tok", "")}}}
		return p
	}(), Mounted},
	{func() *corev1.Pod { // a plain init container has finished before the workload runs
		p := pod("init-only", []corev1.Volume{secretVolume("tok", tokenSecret)}, corev1.Container{})
		p.Spec.InitContainers = []corev1.Container{{Name: "fetch", VolumeMounts: []corev1.VolumeMount{mount("tok", "")}}}
		return p
	}(), NotUsed},
}

func TestSecretUse(t *testing.T) {
	for _, c := range podCases {
		if got := SecretUse(c.pod, tokenSecret); got != c.want {
			t.Errorf("pod %s: SecretUse = %d, want %d", c.pod.Name, got, c.want)
		}
	}
}

// The cache keeps stripped pods: every answer the nudge needs must be the same on the stripped
// pod, and the stripped pod must be much smaller.
func TestStripPodKeepsTheAnswers(t *testing.T) {
	for _, c := range podCases {
		obj, err := StripPod(c.pod.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		s := obj.(*corev1.Pod)
		for _, secret := range []string{tokenSecret, "other"} {
			if got, want := SecretUse(s, secret), SecretUse(c.pod, secret); got != want {
				t.Errorf("pod %s, Secret %s: stripped SecretUse %d, full %d", c.pod.Name, secret, got, want)
			}
		}
		if got, want := SecretsIndex(s), SecretsIndex(c.pod); !slices.Equal(got, want) {
			t.Errorf("pod %s: stripped index values %v, full %v", c.pod.Name, got, want)
		}
		if s.Name != c.pod.Name || s.Namespace != c.pod.Namespace || s.UID != c.pod.UID || s.Labels[authv1alpha1.LabelConsumer] != "true" || s.Status.Phase != c.pod.Status.Phase {
			t.Errorf("pod %s: identity lost: %+v", c.pod.Name, s.ObjectMeta)
		}
		if len(s.Annotations) != 0 || len(s.ManagedFields) != 0 || len(s.Labels) != 1 || s.Status.PodIP != "" {
			t.Errorf("pod %s: kept more than needed: %+v", c.pod.Name, s)
		}
		again, _ := StripPod(s.DeepCopy())
		if a, b := mustJSON(t, again), mustJSON(t, s); a != b {
			t.Errorf("pod %s: StripPod is not idempotent:\n%s\n%s", c.pod.Name, a, b)
		}
		full, stripped := len(mustJSON(t, c.pod)), len(mustJSON(t, s))
		if stripped*2 > full {
			t.Errorf("pod %s: stripped to %d of %d bytes", c.pod.Name, stripped, full)
		}
	}
	if got, err := StripPod("not a pod"); err != nil || got != "not a pod" {
		t.Errorf("StripPod of a non-pod: %v, %v", got, err)
	}
}

func TestIndexValues(t *testing.T) {
	p := pod("many", []corev1.Volume{secretVolume("a", "s1"), projectedVolume("b", "s2", "s1")}, corev1.Container{
		Env: []corev1.EnvVar{envFromSecret("s3"), envFromSecret("s1")}, EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "s4"}}}}})
	if got := SecretsIndex(p); !slices.Equal(got, []string{"s1", "s2", "s3", "s4"}) {
		t.Errorf("index values %v", got)
	}
	if got := SecretsIndex(&corev1.ConfigMap{}); got != nil {
		t.Errorf("index values of a ConfigMap: %v", got)
	}
}

func TestFinished(t *testing.T) {
	p := pod("p", nil, corev1.Container{})
	for phase, want := range map[corev1.PodPhase]bool{corev1.PodPending: false, corev1.PodRunning: false, corev1.PodSucceeded: true, corev1.PodFailed: true} {
		p.Status.Phase = phase
		if Finished(p) != want {
			t.Errorf("phase %s: Finished %v", phase, !want)
		}
	}
	p.Status.Phase = corev1.PodRunning
	p.DeletionTimestamp = &metav1.Time{}
	if !Finished(p) {
		t.Error("a pod being deleted is not finished")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
