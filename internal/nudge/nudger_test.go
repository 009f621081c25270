package nudge

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// world is a fake API server with pods, counting and optionally failing pod patches.
type world struct {
	c       client.Client
	mu      sync.Mutex
	patches map[string]int
	fail    func(pod string, attempt int) error
}

func newWorld(t *testing.T, pods ...*corev1.Pod) *world {
	w := &world{patches: map[string]int{}}
	objs := make([]client.Object, len(pods))
	for i, p := range pods {
		p = p.DeepCopy()
		p.ResourceVersion = ""
		objs[i] = p
	}
	w.c = fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(objs...).
		WithIndex(&corev1.Pod{}, IndexSecrets, SecretsIndex).
		WithInterceptorFuncs(interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			w.mu.Lock()
			w.patches[o.GetName()]++
			n, fail := w.patches[o.GetName()], w.fail
			w.mu.Unlock()
			if fail != nil {
				if err := fail(o.GetName(), n); err != nil {
					return err
				}
			}
			return c.Patch(ctx, o, p, opts...)
		}}).Build()
	return w
}

func (w *world) count(pod string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.patches[pod]
}

func (w *world) annotation(t *testing.T, name string) string {
	t.Helper()
	p := &corev1.Pod{}
	if err := w.c.Get(context.Background(), types.NamespacedName{Namespace: "team-a", Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p.Annotations[authv1alpha1.AnnotationTokenRotatedAt]
}

func mounting(name string) *corev1.Pod {
	return pod(name, []corev1.Volume{secretVolume("tok", tokenSecret)}, corev1.Container{VolumeMounts: []corev1.VolumeMount{mount("tok", "")}})
}

var owner = types.NamespacedName{Namespace: "team-a", Name: "train"}

// start runs the Nudger until the test ends.
func start(t *testing.T, n *Nudger) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = n.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// notified holds, per Nudger of a test, the owners it notified of finished rotations.
var notified sync.Map // *Nudger → chan types.NamespacedName

// newTestNudger is New with a Notify that records the owners.
func newTestNudger(c client.Client, o Options) *Nudger {
	ch := make(chan types.NamespacedName, 1024)
	o.Notify = func(k types.NamespacedName) { ch <- k }
	n := New(c, o)
	notified.Store(n, ch)
	return n
}

// finished waits for the notification of a finished rotation and returns the report.
func finished(t *testing.T, n *Nudger) Report {
	t.Helper()
	ch, _ := notified.Load(n)
	select {
	case k := <-ch.(chan types.NamespacedName):
		if k != owner {
			t.Fatalf("notified of %s", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event of a finished rotation")
	}
	r, ok := n.Report(owner)
	if !ok || !r.Done {
		t.Fatalf("report %+v, %v", r, ok)
	}
	return r
}

func TestRotationNudgesEachMountingPodOnce(t *testing.T) {
	other := pod("env", nil, corev1.Container{Env: []corev1.EnvVar{envFromSecret(tokenSecret)}})
	done := mounting("done")
	done.Status.Phase = corev1.PodSucceeded
	unlabelled := mounting("unlabelled")
	unlabelled.Labels = nil // the real cache never holds it; the fake client does
	w := newWorld(t, mounting("a"), mounting("b"), other, done, unlabelled)
	n := newTestNudger(w.c, Options{QPS: 1000, Burst: 10})
	start(t, n)

	at := time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC)
	rep, err := n.Rotated(context.Background(), Rotation{Owner: owner, Secret: tokenSecret, TokenIssuedAt: at.Truncate(time.Second), WrittenAt: at})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pods != 2 || len(rep.NotUpdatable) != 1 || rep.NotUpdatable[0] != "env" || rep.Done {
		t.Fatalf("report at the start: %+v", rep)
	}
	rep = finished(t, n)
	if rep.Nudged != 2 || rep.Failed != 0 || rep.LastNudge.IsZero() {
		t.Fatalf("report: %+v", rep)
	}
	for _, p := range []string{"a", "b"} {
		if got := w.annotation(t, p); got != "2026-11-28T12:00:00.123456789Z" {
			t.Errorf("pod %s annotation %q", p, got)
		}
		if c := w.count(p); c != 1 {
			t.Errorf("pod %s patched %d times", p, c)
		}
	}
	for _, p := range []string{"env", "done", "unlabelled"} {
		if c := w.count(p); c != 0 {
			t.Errorf("pod %s patched %d times, want never", p, c)
		}
	}

	// The next rotation: a new value, one more patch each.
	at2 := at.Add(200 * time.Second)
	if _, err := n.Rotated(context.Background(), Rotation{Owner: owner, Secret: tokenSecret, TokenIssuedAt: at2.Truncate(time.Second), WrittenAt: at2}); err != nil {
		t.Fatal(err)
	}
	finished(t, n)
	if w.count("a") != 2 || w.annotation(t, "a") != "2026-11-28T12:03:20.123456789Z" {
		t.Errorf("after the second rotation: %d patches, annotation %q", w.count("a"), w.annotation(t, "a"))
	}
}

func TestNoConsumersNoWork(t *testing.T) {
	w := newWorld(t)
	n := newTestNudger(w.c, Options{QPS: 1000, Burst: 10})
	rep, err := n.Rotated(context.Background(), Rotation{Owner: owner, Secret: tokenSecret, TokenIssuedAt: time.Now(), WrittenAt: time.Now()})
	if err != nil || rep.Pods != 0 || !rep.Done {
		t.Fatalf("report %+v, %v", rep, err)
	}
	if n.queue.Len() != 0 {
		t.Fatal("a rotation without consumers was queued")
	}
}

func TestForgetDropsReportAndPendingNudges(t *testing.T) {
	w := newWorld(t)
	n := newTestNudger(w.c, Options{QPS: 1000, Burst: 10})
	if _, err := n.Rotated(context.Background(), Rotation{Owner: owner, Secret: tokenSecret, TokenIssuedAt: time.Now(), WrittenAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	n.Forget(owner)
	if _, ok := n.Report(owner); ok {
		t.Fatal("the report of a forgotten owner is still there")
	}
	n.mu.Lock()
	pending := n.pending[owner]
	n.mu.Unlock()
	if pending != nil {
		t.Fatal("the nudges of a forgotten owner are still pending")
	}
}

// Failures are counted and harmless: a pod gone is not a failure, a forbidden or rejected patch
// is not retried, a throttled or failing one is retried once.
func TestOutcomes(t *testing.T) {
	w := newWorld(t, mounting("gone"), mounting("forbidden"), mounting("throttled-once"), mounting("broken"), mounting("fine"))
	w.fail = func(pod string, attempt int) error {
		switch {
		case pod == "gone":
			return apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, pod)
		case pod == "forbidden":
			return apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, pod, errors.New("no patch for you"))
		case pod == "throttled-once" && attempt == 1:
			return apierrors.NewTooManyRequests("slow down", 1)
		case pod == "broken":
			return apierrors.NewInternalError(errors.New("etcd is sad"))
		}
		return nil
	}
	n := newTestNudger(w.c, Options{QPS: 1000, Burst: 10, RetryDelay: time.Millisecond})
	start(t, n)
	if _, err := n.Rotated(context.Background(), Rotation{Owner: owner, Secret: tokenSecret, TokenIssuedAt: time.Now(), WrittenAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rep := finished(t, n)
	if rep.Pods != 5 || rep.Nudged != 2 || rep.Gone != 1 || rep.Failed != 2 || rep.FirstFailure == "" {
		t.Fatalf("report %+v", rep)
	}
	for pod, want := range map[string]int{"gone": 1, "forbidden": 1, "throttled-once": 2, "broken": 2, "fine": 1} {
		if got := w.count(pod); got != want {
			t.Errorf("pod %s patched %d times, want %d", pod, got, want)
		}
	}
	if w.annotation(t, "throttled-once") == "" || w.annotation(t, "fine") == "" {
		t.Error("the pods whose nudge succeeded carry no annotation")
	}
}

func TestOutcomeOf(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	for err, want := range map[error]string{
		nil:                            OutcomeNudged,
		apierrors.NewNotFound(gr, "p"): OutcomeGone,
		apierrors.NewForbidden(gr, "p", errors.New("x")):                OutcomeForbidden,
		apierrors.NewBadRequest("admission webhook denied the request"): OutcomeRejected,
		apierrors.NewTooManyRequests("x", 1):                            OutcomeThrottled,
		context.DeadlineExceeded:                                        OutcomeThrottled,
		apierrors.NewInternalError(errors.New("x")):                     OutcomeError,
	} {
		if got := outcomeOf(err); got != want {
			t.Errorf("outcomeOf(%v) = %s, want %s", err, got, want)
		}
	}
}

// A rotation that comes while the previous one's nudges still run replaces it: every pod is
// nudged for the newer token, and none more than once per rotation.
func TestNewerRotationSupersedes(t *testing.T) {
	var pods []*corev1.Pod
	names := []string{"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"}
	for _, n := range names {
		pods = append(pods, mounting(n))
	}
	w := newWorld(t, pods...)
	n := newTestNudger(w.c, Options{QPS: 20, Burst: 1}) // 50 ms per nudge: the second rotation comes mid-way
	start(t, n)
	t1 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if _, err := n.Rotated(context.Background(), Rotation{Owner: owner, Secret: tokenSecret, TokenIssuedAt: t1, WrittenAt: t1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(120 * time.Millisecond)
	t2 := t1.Add(time.Minute)
	if _, err := n.Rotated(context.Background(), Rotation{Owner: owner, Secret: tokenSecret, TokenIssuedAt: t2, WrittenAt: t2}); err != nil {
		t.Fatal(err)
	}
	var rep Report
	for rep.TokenIssuedAt != t2 || !rep.Done {
		rep = finished(t, n)
	}
	if rep.Nudged != len(names) {
		t.Fatalf("report %+v", rep)
	}
	for _, p := range names {
		if got := w.annotation(t, p); got != "2026-11-28T12:01:00Z" {
			t.Errorf("pod %s annotation %q", p, got)
		}
		if c := w.count(p); c < 1 || c > 2 {
			t.Errorf("pod %s patched %d times", p, c)
		}
	}
}

// The nudges wait until the operator's cache shows the new Secret (the kubelet's watch is fed by
// the same API server watch cache), and nudge anyway after CacheWait.
func TestNudgesWaitForTheCache(t *testing.T) {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: tokenSecret}, Data: map[string][]byte{"token": []byte("old")}}
	w := newWorld(t, mounting("a"))
	if err := w.c.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	shows := func(s *corev1.Secret) bool { asked.Add(1); return string(s.Data["token"]) == "new" }
	n := newTestNudger(w.c, Options{QPS: 1000, Burst: 10, CacheWait: 5 * time.Second})
	start(t, n)
	if _, err := n.Rotated(context.Background(), Rotation{Owner: owner, Secret: tokenSecret, TokenIssuedAt: time.Now(), WrittenAt: time.Now(), Shows: shows}); err != nil {
		t.Fatal(err)
	}
	for asked.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	if c := w.count("a"); c != 0 {
		t.Fatalf("nudged %d times before the cache showed the new token", c)
	}
	secret.Data["token"] = []byte("new")
	if err := w.c.Update(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	if rep := finished(t, n); rep.Nudged != 1 {
		t.Fatalf("report %+v", rep)
	}

	// A cache that never shows it: nudged after CacheWait all the same.
	n = newTestNudger(w.c, Options{QPS: 1000, Burst: 10, CacheWait: 50 * time.Millisecond})
	start(t, n)
	if _, err := n.Rotated(context.Background(), Rotation{Owner: owner, Secret: tokenSecret, TokenIssuedAt: time.Now(), WrittenAt: time.Now(),
		Shows: func(*corev1.Secret) bool { return false }}); err != nil {
		t.Fatal(err)
	}
	if rep := finished(t, n); rep.Nudged != 1 || w.count("a") != 2 {
		t.Fatalf("report %+v, %d patches", rep, w.count("a"))
	}
}
