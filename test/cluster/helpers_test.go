package cluster

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// restricted is the Pod Security level of every namespace the suite creates.
var restricted = map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}

// leaseName is the operator's leader election Lease (internal/manager), in its own namespace.
const leaseName = "mlflow-token-operator.auth.mlflow-token-operator.io"

// --- Figures --------------------------------------------------------------------------------

// timed runs f and records its duration under name.
func timed(name string, f func()) { times.Timed(name, f) }

// --- Waiting --------------------------------------------------------------------------------

// eventually polls f every interval until it reports done, or fails the test after timeout
// with what f last said.
func eventually(t testing.TB, timeout, interval time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	testenv.EventuallyEvery(t, timeout, interval, what, f)
}

// --- Helm and make --------------------------------------------------------------------------

// helm runs bin/tools/helm against the node (cluster-admin kubeconfig) and fails the test on error.
func helm(t testing.TB, args ...string) string {
	t.Helper()
	out, err := helmErr(args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func helmErr(args ...string) (string, error) {
	cmd := exec.Command(helmBin, append(args, "--kubeconfig", theNode.Kubeconfig())...)
	cmd.Dir = repoRoot
	// Helm's own state (repository cache, config) goes to a throwaway place, not the user's home.
	tmp, err := os.MkdirTemp("", "helm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+tmp, "HELM_CONFIG_HOME="+tmp, "HELM_DATA_HOME="+tmp)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// --- The operator's resources --------------------------------------------------------------

// clientSecret creates the Secret holding a Keycloak client's secret (key client-secret).
func createSecret(t testing.TB, ns, name string, data map[string]string) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: data}
	if err := k8s.Create(context.Background(), s); err != nil {
		t.Fatalf("creating Secret %s/%s: %v", ns, name, err)
	}
}

// keycloakSpec points at this suite's Keycloak through HTTPS, trusting the test CA.
func keycloakSpec(realm, clientID, secretName string) *authv1alpha1.KeycloakSpec {
	return &authv1alpha1.KeycloakSpec{
		URL: kcURL, Realm: realm, ClientID: clientID,
		ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: secretName, Key: "client-secret"},
		CABundle:        string(caPEM),
	}
}

func createToken(t testing.TB, ns, name string, spec authv1alpha1.MLflowAccessTokenSpec) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	obj := &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating MLflowAccessToken %s/%s: %v", ns, name, err)
	}
	return obj
}

func getToken(ns, name string) (*authv1alpha1.MLflowAccessToken, error) {
	obj := &authv1alpha1.MLflowAccessToken{}
	err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, obj)
	return obj, err
}

// waitTokenReady waits for Ready=True (TokenValid) and returns the resource.
func waitTokenReady(t testing.TB, ns, name string, timeout time.Duration) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	var obj *authv1alpha1.MLflowAccessToken
	eventually(t, timeout, 250*time.Millisecond, "MLflowAccessToken "+ns+"/"+name+" Ready", func() (bool, string) {
		var err error
		if obj, err = getToken(ns, name); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionReady)
		if c == nil {
			return false, "no Ready condition"
		}
		return c.Status == metav1.ConditionTrue && c.Reason == authv1alpha1.ReasonTokenValid, c.Reason + ": " + c.Message
	})
	return obj
}

// waitRotations waits until the resource's status counts n more rotations than it did at first
// call, and returns the time that took.
func waitRotations(t testing.TB, ns, name string, n int64, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	first, err := getToken(ns, name)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, 250*time.Millisecond, fmt.Sprintf("%d rotations of %s/%s", n, ns, name), func() (bool, string) {
		obj, err := getToken(ns, name)
		if err != nil {
			return false, err.Error()
		}
		return obj.Status.Rotations >= first.Status.Rotations+n, fmt.Sprintf("rotations %d (from %d)", obj.Status.Rotations, first.Status.Rotations)
	})
	return time.Since(start)
}

// secretData reads a Secret's data (nil when it does not exist).
func secretData(ctx context.Context, ns, name string) (map[string][]byte, error) {
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return s.Data, nil
}

// tokenOf returns the access token in the resource's Secret.
func tokenOf(t testing.TB, obj *authv1alpha1.MLflowAccessToken) string {
	t.Helper()
	d, err := secretData(context.Background(), obj.Namespace, obj.SecretNameOrDefault())
	if err != nil || len(d[tokensecret.KeyToken]) == 0 {
		t.Fatalf("the Secret of %s/%s holds no token (%v)", obj.Namespace, obj.Name, err)
	}
	return string(d[tokensecret.KeyToken])
}

// jwtClaims decodes a JWT's payload (no signature check: only for what the test prints and compares).
func jwtClaims(token string) map[string]any {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var c map[string]any
	_ = json.Unmarshal(b, &c)
	return c
}

// jwtExpiry is the token's exp claim.
func jwtExpiry(token string) time.Time {
	exp, _ := jwtClaims(token)["exp"].(float64)
	return time.Unix(int64(exp), 0)
}

// --- Pods and the operator's Deployment ---------------------------------------------------

// waitDeployment waits until the Deployment's current template runs in `replicas` Ready pods
// and no other pod is left, and returns those pods.
func waitDeployment(t testing.TB, ns, name string, replicas int32, timeout time.Duration) []corev1.Pod {
	t.Helper()
	ctx := context.Background()
	var pods []corev1.Pod
	eventually(t, timeout, 250*time.Millisecond, fmt.Sprintf("Deployment %s/%s with %d Ready pods", ns, name, replicas), func() (bool, string) {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, d); err != nil {
			return false, err.Error()
		}
		st := d.Status
		if st.ObservedGeneration < d.Generation || st.UpdatedReplicas != replicas || st.ReadyReplicas != replicas || st.Replicas != replicas {
			return false, fmt.Sprintf("generation %d observed %d, replicas %d updated %d ready %d", d.Generation, st.ObservedGeneration, st.Replicas, st.UpdatedReplicas, st.ReadyReplicas)
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			return false, err.Error()
		}
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return false, err.Error()
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				return false, "pod " + p.Name + " is terminating"
			}
			if !node.PodReady(&p) {
				return false, "pod " + p.Name + " is not Ready: " + podState(&p)
			}
			pods = append(pods, p)
		}
		return int32(len(pods)) == replicas, fmt.Sprintf("%d pods", len(pods))
	})
	return pods
}

// podState says where a pod is, for messages.
func podState(p *corev1.Pod) string {
	var parts []string
	parts = append(parts, string(p.Status.Phase))
	for _, c := range p.Status.ContainerStatuses {
		switch {
		case c.State.Waiting != nil:
			parts = append(parts, fmt.Sprintf("%s waiting: %s %s", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message))
		case c.State.Terminated != nil:
			parts = append(parts, fmt.Sprintf("%s terminated: %s exit %d", c.Name, c.State.Terminated.Reason, c.State.Terminated.ExitCode))
		case c.State.Running != nil:
			parts = append(parts, fmt.Sprintf("%s running (ready %v, restarts %d)", c.Name, c.Ready, c.RestartCount))
		}
	}
	return strings.Join(parts, "; ")
}

// lease reads the operator's leader election Lease: holder identity ("<pod>_<uuid>"), acquire
// time and transitions. An empty holder means released (or never taken).
func lease(ctx context.Context, ns string) (coordinationv1.LeaseSpec, error) {
	l, err := cs.CoordinationV1().Leases(ns).Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		return coordinationv1.LeaseSpec{}, err
	}
	return l.Spec, nil
}

func holderOf(s coordinationv1.LeaseSpec) string { return ptr.Deref(s.HolderIdentity, "") }

// holderPod is the pod name in a holder identity ("<hostname>_<uuid>"; the hostname is the pod's name).
func holderPod(holder string) string {
	pod, _, _ := strings.Cut(holder, "_")
	return pod
}

// --- Logs -----------------------------------------------------------------------------------

// logLine is one line of the operator's JSON log (--zap-encoder=json).
type logLine struct {
	TS  time.Time
	Msg string
	Raw map[string]any
}

// operatorLog reads a pod's manager log (the previous container's with previous) and returns
// its JSON lines; other lines (klog's, from client-go) are kept as messages without a time.
func operatorLog(ctx context.Context, ns, pod string, previous bool) ([]logLine, string, error) {
	data, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: "manager", Previous: previous}).DoRaw(ctx)
	if err != nil {
		return nil, "", err
	}
	var lines []logLine
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var raw map[string]any
		if json.Unmarshal(sc.Bytes(), &raw) != nil {
			lines = append(lines, logLine{Msg: sc.Text()})
			continue
		}
		l := logLine{Raw: raw}
		l.Msg, _ = raw["msg"].(string)
		switch ts := raw["ts"].(type) {
		case string:
			l.TS, _ = time.Parse(time.RFC3339Nano, ts)
		case float64:
			l.TS = time.Unix(0, int64(ts*1e9))
		}
		lines = append(lines, l)
	}
	return lines, string(data), nil
}

// dumpOnFailure prints the end of an operator pod's log when the test has failed.
func dumpOnFailure(t *testing.T, ns, pod string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		_, raw, err := operatorLog(context.Background(), ns, pod, false)
		if err != nil {
			t.Logf("the log of %s/%s: %v", ns, pod, err)
			return
		}
		t.Logf("the log of %s/%s ends:\n%s", ns, pod, lastLines(raw, 40))
	})
}

// tapLogs copies the logs of every container started in ns, as it runs, to dir (one file per
// pod, container and restart): a deleted pod's log survives there for a failing test's reader.
func tapLogs(ctx context.Context, ns, dir string) {
	_ = os.MkdirAll(dir, 0o755)
	seen := map[string]bool{}
	go func() {
		for ctx.Err() == nil {
			list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, p := range list.Items {
					for _, c := range p.Status.ContainerStatuses {
						if c.State.Running == nil {
							continue
						}
						key := fmt.Sprintf("%s_%s_%d", p.Name, c.Name, c.RestartCount)
						if seen[key] {
							continue
						}
						seen[key] = true
						go follow(ctx, ns, p.Name, c.Name, filepath.Join(dir, key+".log"))
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

func follow(ctx context.Context, ns, pod, container, path string) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	rc, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, Follow: true}).Stream(ctx)
	if err != nil {
		fmt.Fprintf(f, "(log stream: %v)\n", err)
		return
	}
	defer rc.Close()
	_, _ = io.Copy(f, rc)
}

// secretHistory is what a watch on every Secret saw: the last data of each, and which were
// deleted.
type secretHistory struct {
	mu      sync.Mutex
	data    map[string]map[string][]byte // namespace/name -> the last data seen before any deletion
	gone    map[string]bool
	failure error
	done    chan struct{}
}

// watchSecretData lists and then watches every Secret until ctx ends: no version is missed.
func watchSecretData(ctx context.Context) (*secretHistory, error) {
	list, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	h := &secretHistory{data: map[string]map[string][]byte{}, gone: map[string]bool{}, done: make(chan struct{})}
	for _, s := range list.Items {
		h.data[s.Namespace+"/"+s.Name] = s.Data
	}
	w, err := cs.CoreV1().Secrets("").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(h.done)
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					h.mu.Lock()
					h.failure = errors.New("the watch on Secrets ended early")
					h.mu.Unlock()
					return
				}
				s, isSecret := ev.Object.(*corev1.Secret)
				if !isSecret {
					h.mu.Lock()
					h.failure = fmt.Errorf("the watch on Secrets: %v", ev.Object)
					h.mu.Unlock()
					return
				}
				key := s.Namespace + "/" + s.Name
				h.mu.Lock()
				if ev.Type == watch.Deleted {
					h.gone[key] = true
				} else {
					h.data[key] = s.Data
				}
				h.mu.Unlock()
			}
		}
	}()
	return h, nil
}

// get is the last value of a key of a Secret (namespace/name).
func (h *secretHistory) get(secret, key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.data[secret][key])
}

func (h *secretHistory) deleted(secret string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gone[secret]
}

// err waits for the watch to end (after its context) and says whether it missed anything.
func (h *secretHistory) err() error {
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failure
}
