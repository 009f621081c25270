package csi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/csinode"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

const (
	releaseNS  = "mlflow-token-operator-system"
	driverName = csinode.DefaultDriverName
	issuerName = "mlflow"
	// admitLabel is what the issuer's namespaceSelector asks of a namespace.
	admitLabel = "mlflow-tokens"
)

// eventually polls f every interval until it reports done, or fails after timeout.
func eventually(t testing.TB, timeout, every time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	testenv.EventuallyEvery(t, timeout, every, what, f)
}

// kubeletRoot is the node's kubelet --root-dir (test/node's layout: <scratch>/kubelet/root).
func kubeletRoot() string { return filepath.Join("/tmp", theNode.Name(), "kubelet", "root") }

// install installs the chart with the CSI driver on, and the cluster issuer the pods use; it
// returns once the plugin has registered with the kubelet and the issuer is Ready.
func install() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := os.Stat(filepath.Join(kubeletRoot(), "plugins_registry")); err != nil {
		return fmt.Errorf("the node's kubelet root is not where test/node keeps it: %w", err)
	}
	// hostPath volumes: Pod Security "privileged" for the release's namespace.
	if err := theNode.EnsureNamespace(ctx, releaseNS, map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}); err != nil {
		return err
	}
	t := time.Now()
	out, err := helm("install", "mto", filepath.Join(repoRoot, "charts", "mlflow-token-operator"), "--namespace", releaseNS, "--wait", "--timeout", "3m",
		"--set", "csiDriver.enabled=true", "--set", "csiDriver.kubeletRootDir="+kubeletRoot(),
		"--set", "csiDriver.tokenAudiences={"+realmIssuer()+"}")
	if err != nil {
		return fmt.Errorf("helm install: %v\n%s", err, out)
	}
	iss := &authv1alpha1.ClusterKeycloakIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: issuerName},
		Spec: authv1alpha1.ClusterKeycloakIssuerSpec{
			KeycloakIssuerSpec: authv1alpha1.KeycloakIssuerSpec{URL: kcURL, Realm: realmName,
				ClientAuth: authv1alpha1.IssuerClientAuth{ServiceAccount: &authv1alpha1.ServiceAccountAuth{Name: "mlflow-token"}},
				MLflow:     &authv1alpha1.MLflowSpec{TrackingURI: mlflow.URL}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{admitLabel: "enabled"}},
			AllowInsecureHTTP: true, // Keycloak on this machine, plain HTTP
		},
	}
	if err := k8s.Create(ctx, iss); err != nil {
		return err
	}
	for {
		csiNode, err := cs.StorageV1().CSINodes().Get(ctx, theNode.Name(), metav1.GetOptions{})
		registered := err == nil && len(csiNode.Spec.Drivers) > 0 && csiNode.Spec.Drivers[0].Name == driverName
		cur := &authv1alpha1.ClusterKeycloakIssuer{}
		ready := k8s.Get(ctx, client.ObjectKey{Name: issuerName}, cur) == nil && len(cur.Status.Conditions) > 0 && cur.Status.Conditions[0].Status == metav1.ConditionTrue
		if registered && ready {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the plugin registered: %v, the issuer Ready: %v (%+v)", registered, ready, cur.Status.Conditions)
		case <-time.After(250 * time.Millisecond):
		}
	}
	figures.Figure("helm install until the plugin registered with the kubelet and the issuer was Ready: %s", time.Since(t).Round(100*time.Millisecond))
	for _, f := range clients {
		if err := ensureNamespace(ctx, f.Namespace, true); err != nil {
			return err
		}
		if err := ensureServiceAccount(ctx, f.Namespace, f.ServiceAccount); err != nil {
			return err
		}
	}
	return nil
}

func helm(args ...string) (string, error) {
	cmd := exec.Command(helmBin, append(args, "--kubeconfig", theNode.Kubeconfig())...)
	tmp, err := os.MkdirTemp("", "helm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+tmp, "HELM_CONFIG_HOME="+tmp, "HELM_DATA_HOME="+tmp)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ensureNamespace creates a restricted namespace, admitted by the issuer or not.
func ensureNamespace(ctx context.Context, name string, admitted bool) error {
	labels := map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
	if admitted {
		labels[admitLabel] = "enabled"
	}
	return theNode.EnsureNamespace(ctx, name, labels)
}

func ensureServiceAccount(ctx context.Context, ns, name string) error {
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// csiVolume is the inline volume a pod asks for its token with.
func csiVolume(name, clientID string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: driverName, ReadOnly: ptr.To(true),
		VolumeAttributes: map[string]string{csinode.AttrIssuerRef: authv1alpha1.KindClusterKeycloakIssuer + "/" + issuerName, csinode.AttrClientID: clientID},
	}}}
}

func restrictedSecurity() (*corev1.PodSecurityContext, *corev1.SecurityContext) {
	return &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		&corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
}

// podWith is a pod of sa in ns running one container (image and args) with the CSI volume of
// clientID mounted at the token-file plugin's default directory.
func podWith(ns, name, sa, clientID, image string, args ...string) *corev1.Pod {
	podSec, sec := restrictedSecurity()
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false), RestartPolicy: corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](1), SecurityContext: podSec,
			Containers: []corev1.Container{{Name: "main", Image: image, ImagePullPolicy: corev1.PullIfNotPresent, Args: args, SecurityContext: sec,
				VolumeMounts: []corev1.VolumeMount{{Name: "mlflow", MountPath: "/var/run/secrets/mlflow", ReadOnly: true}}}},
			Volumes: []corev1.Volume{csiVolume("mlflow", clientID)},
		},
	}
}

// watcher is a tokenwatch pod: it prints a line per new token it reads (every 2 ms).
func watcher(f federated, name string) *corev1.Pod {
	return podWith(f.Namespace, name, f.ServiceAccount, f.ClientID, tokenwatchImage, "-every", "2ms", "/var/run/secrets/mlflow/token")
}

func createPod(t testing.TB, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	got, err := cs.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	return got
}

func waitRunning(t testing.TB, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	eventually(t, timeout, 200*time.Millisecond, "pod "+ns+"/"+name+" running", func() (bool, string) {
		var err error
		if p, err = cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase) + " " + podEvents(ns, name)
	})
	return p
}

// podEvents are the messages of the pod's events (FailedMount and others), joined.
func podEvents(ns, name string) string {
	list, err := cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return err.Error()
	}
	var msgs []string
	for _, e := range list.Items {
		msgs = append(msgs, e.Reason+": "+e.Message)
	}
	return strings.Join(msgs, " | ")
}

func deletePod(ns, name string) error {
	err := cs.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func waitGone(t testing.TB, ns, name string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, 200*time.Millisecond, "pod "+ns+"/"+name+" gone", func() (bool, string) {
		_, err := cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// hostToken reads the token file of a pod's volume from the node's disk (the test runs as root on
// the node's machine): only to ask Keycloak about it, never printed.
func hostToken(p *corev1.Pod, volume string) (string, error) {
	b, err := os.ReadFile(filepath.Join(kubeletRoot(), "pods", string(p.UID), "volumes", "kubernetes.io~csi", volume, "mount", "token"))
	return string(b), err
}

// pluginPod is the running node plugin pod.
func pluginPod(t testing.TB) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 2*time.Minute, 250*time.Millisecond, "the node plugin pod Ready", func() (bool, string) {
		list, err := cs.CoreV1().Pods(releaseNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=csi-node"})
		if err != nil || len(list.Items) != 1 {
			return false, fmt.Sprintf("%v, %d pods", err, len(list.Items))
		}
		p := list.Items[0]
		for _, c := range p.Status.ContainerStatuses {
			if c.Ready && p.DeletionTimestamp == nil {
				pod = &p
				return true, ""
			}
		}
		return false, string(p.Status.Phase)
	})
	return pod
}

// pluginLine is one JSON line of the plugin's log.
type pluginLine struct {
	Msg        string `json:"msg"`
	Pod        string `json:"pod"`
	Token      string `json:"token"`
	AnsweredAt string `json:"answeredAt"`
	Took       string `json:"took"`
	Subject    string `json:"subject"`
	Reason     string `json:"reason"`
}

// pluginLog reads the plugin's log lines, of the current container and of the one before a
// restart (previous).
func pluginLog(t testing.TB, previous bool) []pluginLine {
	t.Helper()
	p := pluginPod(t)
	data, err := cs.CoreV1().Pods(releaseNS).GetLogs(p.Name, &corev1.PodLogOptions{Previous: previous}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("the plugin's log: %v", err)
	}
	var lines []pluginLine
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l pluginLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			lines = append(lines, l)
		}
	}
	return lines
}

// podLog is a container's log.
func podLog(t testing.TB, ns, name string) string {
	t.Helper()
	data, err := cs.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("log of %s/%s: %v", ns, name, err)
	}
	return string(data)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p * float64(len(s)-1))
	return s[i]
}

func metav1ListAll() metav1.ListOptions { return metav1.ListOptions{} }
