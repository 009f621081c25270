package node_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// restricted is the Pod Security level the operator's namespace runs under.
var restricted = map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}

// probePod runs the probe with args, as a restricted-compliant pod, optionally mounting a Secret
// at /etc/secret.
func probePod(ns, name, secret string, args ...string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65532),
				RunAsGroup:     ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "probe",
				Image:           probeRef,
				ImagePullPolicy: corev1.PullNever,
				Args:            args,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	if secret != "" {
		pod.Spec.Volumes = []corev1.Volume{{Name: "secret", VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: secret},
		}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "secret", MountPath: "/etc/secret", ReadOnly: true}}
	}
	return pod
}

func secretWith(ns, name, value string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Data:       map[string][]byte{"value": []byte(value)},
	}
}

// hopeless are the waiting reasons that no amount of waiting heals here: the image is imported or
// not, and the probe never exits on its own.
var hopeless = map[string]bool{"ErrImageNeverPull": true, "InvalidImageName": true, "CrashLoopBackOff": true}

// waitRunning waits until the pod's container runs; it fails at once when the pod cannot start,
// and otherwise says on timeout where the pod was stuck (a loaded machine only makes it slower).
func waitRunning(ctx context.Context, c kubernetes.Interface, ns, name string, timeout time.Duration) error {
	var fatal error
	err := waitFor(timeout, 250*time.Millisecond, func() error {
		pod, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, st := range pod.Status.ContainerStatuses {
			switch {
			case st.State.Running != nil:
				return nil
			case st.State.Waiting != nil && hopeless[st.State.Waiting.Reason]:
				fatal = fmt.Errorf("pod %s/%s: %s: %s", ns, name, st.State.Waiting.Reason, st.State.Waiting.Message)
				return nil
			case st.State.Terminated != nil:
				fatal = fmt.Errorf("pod %s/%s: container exited %d (%s)", ns, name, st.State.Terminated.ExitCode, st.State.Terminated.Reason)
				return nil
			case st.State.Waiting != nil:
				return fmt.Errorf("pod %s/%s: %s: %s", ns, name, st.State.Waiting.Reason, st.State.Waiting.Message)
			}
		}
		return fmt.Errorf("pod %s/%s is %s", ns, name, pod.Status.Phase)
	})
	if fatal != nil {
		return fatal
	}
	return err
}

// podLog reads a pod's log through the API server (pods/log: API server -> kubelet -> containerd).
func podLog(ctx context.Context, c kubernetes.Interface, ns, name string) (string, error) {
	data, err := c.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
	return string(data), err
}

// seenAt finds the probe's "seen <unix ns> <quoted content>" line for content; ok is false when
// the pod has not seen it yet.
func seenAt(log, content string) (time.Time, bool) {
	for _, line := range strings.Split(log, "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 || f[0] != "seen" {
			continue
		}
		got, err := strconv.Unquote(f[2])
		if err != nil || got != content {
			continue
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		return time.Unix(0, ns), true
	}
	return time.Time{}, false
}
