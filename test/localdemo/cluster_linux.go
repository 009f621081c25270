//go:build linux

// What the node mode installs and creates, as a user would: the chart, an issuer, a token, a pod.
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"
)

const (
	release   = "mlflow-token-operator"
	chartName = "mlflow-token-operator" // the operator pods' app.kubernetes.io/name
	chartDir  = "charts/mlflow-token-operator"
	readerPod = "token-reader"
	tokenDir  = "/var/run/secrets/mlflow"
)

// helm runs bin/tools/helm against the node, with its own cache and config under bin/local, and
// its output in the run's log directory.
func (d *demo) helm(ctx context.Context, args ...string) error {
	args = append(args, "--kubeconfig", d.n.Kubeconfig())
	cmd := exec.CommandContext(ctx, filepath.Join("bin", "tools", "helm"), args...)
	home, _ := filepath.Abs(filepath.Join(localDir, "helm"))
	// None of the caller's Helm settings (HELM_KUBECONTEXT, HELM_NAMESPACE, ...): this node only.
	env := slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "HELM_") })
	cmd.Env = append(env, "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group: a terminal's Ctrl-C reaches this program, which decides (through ctx)
	// whether helm is cut short.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err := cmd.Run()
	_ = os.WriteFile(filepath.Join(d.logDir, "helm-"+args[0]+".log"), out.Bytes(), 0o644)
	if err != nil {
		return fmt.Errorf("helm %s: %v\n%s", args[0], err, strings.TrimSpace(out.String()))
	}
	return nil
}

func (d *demo) installOperator(ctx context.Context) error {
	t := time.Now()
	// The chart as it is: its default image is the one imported into the node (pull policy
	// IfNotPresent: nothing is pulled).
	// Both namespaces enforce Pod Security "restricted", as a production cluster's would.
	if err := d.n.EnsureNamespace(ctx, operatorNS, restricted); err != nil {
		return err
	}
	say("helm install %s %s --namespace %s --wait", release, chartDir, operatorNS)
	if err := d.helm(ctx, "install", release, chartDir, "--namespace", operatorNS, "--wait", "--timeout", "5m"); err != nil {
		return err
	}
	d.helmUp = true
	var pods corev1.PodList
	if err := d.c.List(ctx, &pods, client.InNamespace(operatorNS), client.MatchingLabels{"app.kubernetes.io/instance": release}); err != nil {
		return err
	}
	for _, p := range pods.Items {
		if !node.PodReady(&p) || p.Labels["app.kubernetes.io/name"] != chartName {
			continue
		}
		say("Operator pod %s/%s Ready %s after helm install began (image %s)", p.Namespace, p.Name, since(t), p.Spec.Containers[0].Image)
		go copyLog(d.bg, d.n.Client(), p.Namespace, p.Name, filepath.Join(d.logDir, "operator.log"))
		return nil
	}
	return fmt.Errorf("helm install succeeded, yet no Ready operator pod in %s", operatorNS)
}

func (d *demo) uninstallOperator(ctx context.Context) error {
	t := time.Now()
	say("helm uninstall %s --namespace %s --wait (its pre-delete hook finds no token left to revoke)", release, operatorNS)
	if err := d.helm(ctx, "uninstall", release, "--namespace", operatorNS, "--wait", "--timeout", "3m"); err != nil {
		return err
	}
	say("Helm release uninstalled in %s", since(t))
	return nil
}

var restricted = map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}

// prepareNamespaces: the team's namespace, and the client secret, which a ClusterKeycloakIssuer
// reads from the operator's namespace: the team never sees it.
func (d *demo) prepareNamespaces(ctx context.Context) error {
	if err := d.n.EnsureNamespace(ctx, demoNS, restricted); err != nil {
		return err
	}
	return d.c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: clientID + "-client", Namespace: operatorNS},
		StringData: map[string]string{"client-secret": clientSecret},
	})
}

// startReader runs the pod that reads the token, as a training job would: the Secret mounted as
// a directory, and the consumer label, so that the operator nudges it after each rotation.
func (d *demo) startReader(ctx context.Context) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: readerPod, Namespace: demoNS, Labels: map[string]string{authv1alpha1.LabelConsumer: "true"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: "reader", Image: d.image("tokenwatch").Ref, ImagePullPolicy: corev1.PullIfNotPresent,
				Args:         []string{tokenDir + "/token"},
				VolumeMounts: []corev1.VolumeMount{{Name: "mlflow-token", MountPath: tokenDir, ReadOnly: true}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("8Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
				},
			}},
			Volumes: []corev1.Volume{{Name: "mlflow-token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secretName}}}},
		},
	}
	if err := d.c.Create(ctx, pod); err != nil {
		return err
	}
	t := time.Now()
	if err := waitFor(ctx, 2*time.Minute, func() (bool, string) {
		if err := d.c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err.Error()
		}
		return pod.Status.Phase == corev1.PodRunning, "phase " + string(pod.Status.Phase)
	}); err != nil {
		return fmt.Errorf("pod %s/%s: %w", demoNS, readerPod, err)
	}
	say("Pod %s/%s running in %s: Secret %s mounted at %s, label %s=true (the operator nudges it after each rotation)",
		demoNS, readerPod, since(t), secretName, tokenDir, authv1alpha1.LabelConsumer)
	return nil
}
