package controllers

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/nudge"
)

// The nudge scenarios: after a rotation, the labelled pods that mount the Secret are nudged (one
// annotation patch each), status.consumers reports it, and DeliveryAtRisk says when consumers may
// read an expired token. The Nudger runs for real over the fake client.
func TestNudgeScenarios(t *testing.T) {
	for _, sc := range nudgeScenarios {
		t.Run(sc.name, func(t *testing.T) { sc.run(t) })
	}
}

// nudgeEnv is a scenario's world plus consumer pods and a running Nudger.
type nudgeEnv struct {
	*env
	n *nudge.Nudger

	mu       sync.Mutex
	patches  map[string]int            // pod → patches
	failPod  func(name string) error   // makes a pod's patches fail
	patchOps []string                  // "<pod> <patch body>" in order
	done     chan types.NamespacedName // the Nudger's notifications (the operator: Notify)
}

// newNudgeEnv builds the scenario's world with pods, the pod index the operator's cache has, and a
// running Nudger (unless nudging is false).
func newNudgeEnv(t *testing.T, nudging bool, mutate func(*authv1alpha1.MLflowAccessToken), pods ...*corev1.Pod) *nudgeEnv {
	t.Helper()
	e := newEnv(t, mutate)
	ne := &nudgeEnv{env: e, patches: map[string]int{}}
	obj := e.obj()
	obj.ResourceVersion = ""
	objs := []client.Object{obj, userSecret(clientSecret, map[string]string{"client-secret": testSecret})}
	for _, p := range pods {
		objs = append(objs, p)
	}
	e.c = withOperatorIndexes(fake.NewClientBuilder().WithScheme(scheme.New())).WithObjects(objs...).
		WithStatusSubresource(&authv1alpha1.MLflowAccessToken{}).
		WithIndex(&corev1.Pod{}, nudge.IndexSecrets, nudge.SecretsIndex).
		WithInterceptorFuncs(interceptor.Funcs{
			Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
				if o.GetObjectKind().GroupVersionKind().Kind == "Pod" {
					data, _ := p.Data(o)
					ne.mu.Lock()
					ne.patches[o.GetName()]++
					ne.patchOps = append(ne.patchOps, o.GetName()+" "+string(data))
					fail := ne.failPod
					ne.mu.Unlock()
					if fail != nil {
						if err := fail(o.GetName()); err != nil {
							return err
						}
					}
				}
				return c.Patch(ctx, o, p, opts...)
			},
		}).Build()
	e.r.Client = e.c
	if nudging {
		ne.done = make(chan types.NamespacedName, 1024)
		ne.n = nudge.New(e.c, nudge.Options{QPS: 1000, Burst: 100, RetryDelay: time.Millisecond,
			Notify: func(k types.NamespacedName) { ne.done <- k }})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = ne.n.Start(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		e.r.Delivery = Delivery{Nudger: ne.n}
	}
	return ne
}

// consumerPod is a running pod labelled as a consumer that reads Secret testName as use says:
// "volume", "projected", "subPath" or "env".
func consumerPod(name, use string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, Labels: map[string]string{authv1alpha1.LabelConsumer: "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "train", Image: "train:1"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	c := &p.Spec.Containers[0]
	mount := corev1.VolumeMount{Name: "token", MountPath: "/var/run/secrets/mlflow"}
	switch use {
	case "volume", "subPath":
		p.Spec.Volumes = []corev1.Volume{{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: testName}}}}
		if use == "subPath" {
			mount.SubPath = "token"
		}
		c.VolumeMounts = []corev1.VolumeMount{mount}
	case "projected":
		p.Spec.Volumes = []corev1.Volume{{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: testName}}}}}}}}
		c.VolumeMounts = []corev1.VolumeMount{mount}
	case "env":
		c.EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: testName}}}}
	}
	return p
}

// nudged waits until the Nudger reports a finished rotation (in the operator, the event that
// brings the resource back), then reconciles as that event would.
func (ne *nudgeEnv) nudged() {
	ne.t.Helper()
	select {
	case k := <-ne.done:
		if k != key {
			ne.t.Fatalf("notified of %s", k)
		}
	case <-time.After(10 * time.Second):
		ne.t.Fatal("the nudges of the rotation did not finish")
	}
	ne.reconcile()
}

func (ne *nudgeEnv) patchCount(pod string) int {
	ne.mu.Lock()
	defer ne.mu.Unlock()
	return ne.patches[pod]
}

func (ne *nudgeEnv) rotatedAt(pod string) string {
	ne.t.Helper()
	p := &corev1.Pod{}
	if err := ne.c.Get(ne.ctx, types.NamespacedName{Namespace: testNS, Name: pod}, p); err != nil {
		ne.t.Fatal(err)
	}
	return p.Annotations[authv1alpha1.AnnotationTokenRotatedAt]
}

func (ne *nudgeEnv) consumers() authv1alpha1.ConsumersStatus {
	ne.t.Helper()
	c := ne.obj().Status.Consumers
	if c == nil {
		ne.t.Fatal("no status.consumers")
	}
	return *c
}

func (ne *nudgeEnv) condMessage(typ string) string {
	c := meta.FindStatusCondition(ne.obj().Status.Conditions, typ)
	if c == nil {
		return ""
	}
	return c.Message
}

var nudgeScenarios = []scenario{
	{"consumer pods are nudged after each rotation, one patch each", func(t *testing.T) {
		ne := newNudgeEnv(t, true, nil, consumerPod("vol", "volume"), consumerPod("proj", "projected"),
			consumerPod("sub", "subPath"), consumerPod("env", "env"))
		ne.reconcile()
		first := ne.clk.Now().UTC().Format(time.RFC3339Nano)
		ne.wantEvent("Warning", "ConsumersNotUpdatable", "2 labelled pods (env, sub)", "Secret train")
		ne.nudged()
		for _, p := range []string{"vol", "proj"} {
			if got := ne.rotatedAt(p); got != first {
				t.Errorf("pod %s: %s=%q, want %q", p, authv1alpha1.AnnotationTokenRotatedAt, got, first)
			}
		}
		c := ne.consumers()
		if c.Pods != 2 || c.Nudged != 2 || c.Failed != 0 || c.NotUpdatable != 2 || c.LastNudgeTime == nil ||
			c.TokenIssuedAt == nil || !c.TokenIssuedAt.Equal(ne.obj().Status.IssuedAt) {
			t.Fatalf("status.consumers %+v", c)
		}
		ne.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")

		// Reconciles between rotations nudge nobody.
		for range 3 {
			ne.clk.Step(10 * time.Second)
			ne.reconcile()
		}
		for _, p := range []string{"vol", "proj", "sub", "env"} {
			if want := map[string]int{"vol": 1, "proj": 1}[p]; ne.patchCount(p) != want {
				t.Errorf("pod %s: %d patches after one rotation, want %d", p, ne.patchCount(p), want)
			}
		}

		// The next rotation: a new value on each, one more patch each, and the warning again
		// (the events library folds repeats into one series).
		ne.events()
		ne.next()
		second := ne.clk.Now().UTC().Format(time.RFC3339Nano)
		ne.wantEvent("Warning", "ConsumersNotUpdatable", "2 labelled pods (env, sub)")
		ne.nudged()
		if ne.rotatedAt("vol") != second || ne.patchCount("vol") != 2 || ne.patchCount("proj") != 2 || ne.patchCount("sub") != 0 {
			t.Fatalf("second rotation: annotation %q (want %q), patches vol %d proj %d sub %d",
				ne.rotatedAt("vol"), second, ne.patchCount("vol"), ne.patchCount("proj"), ne.patchCount("sub"))
		}
		if c := ne.consumers(); !c.TokenIssuedAt.Equal(ne.obj().Status.IssuedAt) || c.Nudged != 2 {
			t.Fatalf("status.consumers after the second rotation: %+v", c)
		}
		// The patch is one annotation, as a merge patch without resourceVersion: it cannot
		// conflict with the pod's owner, and it carries no token.
		for _, op := range ne.patchOps {
			body := op[strings.Index(op, " ")+1:]
			if strings.Contains(body, "resourceVersion") || strings.Contains(body, ne.token()) || strings.Count(body, ":") > 6 {
				t.Errorf("pod patch %s", op)
			}
		}
	}},
	{"a failed nudge is reported and harmless", func(t *testing.T) {
		ne := newNudgeEnv(t, true, nil, consumerPod("ok", "volume"), consumerPod("locked", "volume"))
		ne.failPod = func(name string) error {
			if name == "locked" {
				return apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, name, errors.New("denied by policy no-pod-updates"))
			}
			return nil
		}
		ne.reconcile()
		if ne.token() == "" {
			t.Fatal("no token written")
		}
		ne.nudged()
		c := ne.consumers()
		if c.Pods != 2 || c.Nudged != 1 || c.Failed != 1 {
			t.Fatalf("status.consumers %+v", c)
		}
		ne.wantEvent("Warning", "NudgeFailed", "1 of 2", "locked", "forbidden")
		ne.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		ne.wantCond(authv1alpha1.ConditionRenewalFailing, "False/RenewalSucceeded")
		if ne.patchCount("locked") != 1 {
			t.Fatalf("a forbidden nudge was retried: %d patches", ne.patchCount("locked"))
		}
		// The report is copied once; later reconciles repeat no event.
		ne.clk.Step(5 * time.Second)
		ne.reconcile()
		for _, ev := range ne.events() {
			if strings.Contains(ev, "NudgeFailed") {
				t.Fatalf("repeated event %q", ev)
			}
		}
	}},
	{"DeliveryAtRisk: a short token without nudged consumers", func(t *testing.T) {
		ne := newNudgeEnv(t, true, nil)
		ne.kc.AccessLifetime = time.Minute
		ne.reconcile()
		ne.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		ne.wantCond(authv1alpha1.ConditionDeliveryAtRisk, "True/MarginBelowKubeletSync")
		msg := ne.condMessage(authv1alpha1.ConditionDeliveryAtRisk)
		for _, part := range []string{"Tokens live 1m0s", "renewed 20s before", "up to 1m30s", authv1alpha1.LabelConsumer + "=true", "at least 4m28s"} {
			if !strings.Contains(msg, part) {
				t.Errorf("message %q lacks %q", msg, part)
			}
		}
		ne.wantEvent("Warning", "MarginBelowKubeletSync")
		if err := ne.current(); err != nil {
			t.Fatalf("not Current for kstatus with DeliveryAtRisk=True: %v", err)
		}
		// The same verdict again: no new event.
		ne.clk.Step(5 * time.Second)
		ne.reconcile()
		for _, ev := range ne.events() {
			if strings.Contains(ev, "MarginBelow") {
				t.Fatalf("repeated event %q", ev)
			}
		}

		// A labelled consumer appears: it will be nudged, so a minute's margin of 20 s is enough.
		if err := ne.c.Create(ne.ctx, consumerPod("train-0", "volume")); err != nil {
			t.Fatal(err)
		}
		ne.clk.Step(time.Second)
		ne.reconcile()
		ne.wantCond(authv1alpha1.ConditionDeliveryAtRisk, "False/MarginSufficient")
		if msg := ne.condMessage(authv1alpha1.ConditionDeliveryAtRisk); !strings.Contains(msg, "1 nudged consumer pods") || !strings.Contains(msg, "without the label") {
			t.Errorf("message %q", msg)
		}
		ne.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"DeliveryAtRisk: a token too short even for nudged consumers", func(t *testing.T) {
		ne := newNudgeEnv(t, true, nil, consumerPod("train-0", "volume"))
		ne.kc.AccessLifetime = 12 * time.Second
		ne.reconcile()
		ne.wantCond(authv1alpha1.ConditionDeliveryAtRisk, "True/MarginBelowNudgeDelivery")
		if msg := ne.condMessage(authv1alpha1.ConditionDeliveryAtRisk); !strings.Contains(msg, "at least 13s") {
			t.Errorf("message %q", msg)
		}
		ne.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		if err := ne.current(); err != nil {
			t.Fatalf("not Current for kstatus: %v", err)
		}
	}},
	{"DeliveryAtRisk: Keycloak's default 5-minute tokens are safe without nudges", func(t *testing.T) {
		ne := newNudgeEnv(t, true, nil)
		ne.reconcile()
		ne.wantCond(authv1alpha1.ConditionDeliveryAtRisk, "False/MarginSufficient")
		if msg := ne.condMessage(authv1alpha1.ConditionDeliveryAtRisk); !strings.Contains(msg, "at least 1m40s") || !strings.Contains(msg, "within 1m30s") {
			t.Errorf("message %q", msg)
		}
		if c := ne.consumers(); c.Pods != 0 || c.Nudged != 0 {
			t.Fatalf("status.consumers %+v", c)
		}
	}},
	{"nudging off: no pod is read or patched, and the kubelet's delay counts", func(t *testing.T) {
		ne := newNudgeEnv(t, false, nil, consumerPod("train-0", "volume"))
		ne.kc.AccessLifetime = time.Minute
		ne.reconcile()
		ne.next()
		if n := ne.patchCount("train-0"); n != 0 || ne.obj().Status.Consumers != nil {
			t.Fatalf("nudging is off, yet %d patches, status.consumers %+v", n, ne.obj().Status.Consumers)
		}
		ne.wantCond(authv1alpha1.ConditionDeliveryAtRisk, "True/MarginBelowKubeletSync")
		if msg := ne.condMessage(authv1alpha1.ConditionDeliveryAtRisk); !strings.Contains(msg, "--nudge-consumer-pods") {
			t.Errorf("message %q", msg)
		}
	}},
	{"the kubelet's syncFrequency of the cluster counts", func(t *testing.T) {
		ne := newNudgeEnv(t, false, nil)
		ne.r.Delivery.KubeletSyncFrequency = 10 * time.Second
		ne.kc.AccessLifetime = time.Minute
		ne.reconcile()
		ne.wantCond(authv1alpha1.ConditionDeliveryAtRisk, "False/MarginSufficient")
	}},
}
