// Package nudge gets new tokens into running pods within a second or two.
//
// The kubelet rewrites a pod's Secret volume when it syncs the pod: at once when the pod object
// changes, otherwise only at its periodic sync (up to ~90 s with the default syncFrequency of 1
// minute; measured on a real node, p50 46–49 s, p99 80–85 s). So after a new token is written to
// a Secret, the Nudger patches one annotation on each pod that consumes it (a metadata change: no
// restart, nothing a Deployment, Job or GitOps tool owns) and the kubelet rewrites the volume
// within ~0.2 s.
//
// Only pods labelled auth.mlflow-token-operator.io/consumer=true are seen (the operator caches no
// other pod), and only those that mount the Secret as a volume directory are nudged: env vars and
// subPath mounts never change in a running container, and are reported instead.
//
// Nudges are asynchronous (they never delay the Secret or status write), rate limited by their own
// token bucket, and cost one patch per consumer pod per rotation (two at most when the first
// failed transiently). Failures are counted and reported, never retried beyond that: the kubelet's
// periodic sync still delivers the token.
package nudge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
)

// Options configure the Nudger.
type Options struct {
	// QPS and Burst are the token bucket of nudges (pod patches), all resources together.
	QPS   float64
	Burst int
	// Workers nudge the pods of different resources in parallel (zero: 2).
	Workers int
	// RetryDelay is the wait before the one retry of nudges that failed transiently (throttled,
	// server errors); zero: 1 s.
	RetryDelay time.Duration
	// CacheWait bounds the wait for the operator's cache to show the new Secret (zero: 2 s).
	CacheWait time.Duration
	// Clock stamps the nudges and times their waits (nil: the real clock).
	Clock clock.Clock
	// Notify is called with the owner when a rotation's nudges are done, so that the reconciler
	// reports them (internal/wake); it must not block.
	Notify func(owner types.NamespacedName)
}

// DefaultOptions are the defaults of cmd/main.go's flags: 20 nudges per second with bursts of 50
// keeps a rotation of a 50-pod job under a second, and spreads the watch events a thousand-pod
// job's nudges cause to every pod watcher (kubelet, controllers) over a minute.
func DefaultOptions() Options { return Options{QPS: 20, Burst: 50} }

// Rotation is a new token written to a Secret.
type Rotation struct {
	// Owner is the MLflowAccessToken; its namespace is the Secret's and the pods'.
	Owner types.NamespacedName
	// Secret is the name of the Secret.
	Secret string
	// TokenIssuedAt identifies the token (its issue time, as the resource's status has it).
	TokenIssuedAt time.Time
	// WrittenAt is when the Secret write was answered. It is the annotation's value.
	WrittenAt time.Time
	// Shows reports whether a Secret (as the operator's cache has it) holds this rotation's
	// token. The nudges wait until it does (see awaitCache); nil: they do not wait.
	Shows func(*corev1.Secret) bool
}

// Report is what became of one rotation's consumers.
type Report struct {
	// TokenIssuedAt is the Rotation's.
	TokenIssuedAt time.Time
	// Pods is how many labelled pods mounted the Secret as a volume when the rotation came.
	Pods int
	// NotUpdatable names the labelled pods that read the Secret only through env vars or subPath
	// mounts (sorted).
	NotUpdatable []string
	// Nudged, Gone (deleted meanwhile) and Failed count the nudges' outcomes so far.
	Nudged, Gone, Failed int
	// FirstFailure describes the first failed nudge ("" when none failed).
	FirstFailure string
	// LastNudge is when the last pod was nudged.
	LastNudge time.Time
	// Done: every pod has been nudged or has failed.
	Done bool

	created time.Time
}

// Outcomes of a nudge (the label values of mlflow_token_pod_nudges_total).
const (
	OutcomeNudged    = "nudged"
	OutcomeGone      = "gone"
	OutcomeForbidden = "forbidden"
	OutcomeRejected  = "rejected"
	OutcomeThrottled = "throttled"
	OutcomeError     = "error"
)

// Nudger nudges the consumer pods of rotated Secrets. It is a manager Runnable that runs on the
// leader only, like the reconciler that feeds it.
type Nudger struct {
	c       client.Client
	opts    Options
	limiter *rate.Limiter
	queue   workqueue.TypedInterface[types.NamespacedName]

	mu      sync.Mutex
	pending map[types.NamespacedName]*job
	reports map[types.NamespacedName]*Report
}

type job struct {
	rot  Rotation
	pods []string
}

// New returns a Nudger that reads pods through c (the manager's cache, see Setup) and patches
// them through c.
func New(c client.Client, o Options) *Nudger {
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	if o.CacheWait <= 0 {
		o.CacheWait = 2 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	limit, burst := rate.Limit(o.QPS), o.Burst
	if o.QPS <= 0 {
		limit = rate.Inf
	}
	if burst < 1 {
		burst = 1
	}
	return &Nudger{
		c: c, opts: o, limiter: rate.NewLimiter(limit, burst),
		queue:   workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[types.NamespacedName]{Name: "nudge"}),
		pending: map[types.NamespacedName]*job{},
		reports: map[types.NamespacedName]*Report{},
	}
}

// Setup registers the pod index the Nudger reads, and the Nudger itself, with mgr. The manager's
// cache must hold pods as CacheConfig says (internal/manager does it).
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) (*Nudger, error) {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, IndexSecrets, SecretsIndex); err != nil {
		return nil, err
	}
	n := New(mgr.GetClient(), o)
	return n, mgr.Add(n)
}

// NeedLeaderElection: only the leader writes tokens, so only the leader nudges.
func (n *Nudger) NeedLeaderElection() bool { return true }

// QPS is the rate limit of nudges (0: unlimited).
func (n *Nudger) QPS() float64 { return n.opts.QPS }

// Consumers lists the labelled pods in namespace that consume the Secret called secret, from the
// cache: those that mount it as a volume (nudged) and those that cannot be updated. Pods that
// finished or are being deleted are left out. Both lists are sorted.
func (n *Nudger) Consumers(ctx context.Context, namespace, secret string) (mounted, notUpdatable []string, err error) {
	var pods corev1.PodList
	// The cache holds labelled pods only; the label selector says so to any other client too.
	if err := n.c.List(ctx, &pods, client.InNamespace(namespace), client.MatchingFields{IndexSecrets: secret},
		client.MatchingLabels{authv1alpha1.LabelConsumer: "true"}); err != nil {
		return nil, nil, err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if Finished(p) {
			continue
		}
		switch SecretUse(p, secret) {
		case Mounted:
			mounted = append(mounted, p.Name)
		case NotUpdatable:
			notUpdatable = append(notUpdatable, p.Name)
		}
	}
	slices.Sort(mounted)
	slices.Sort(notUpdatable)
	return mounted, notUpdatable, nil
}

// Rotated queues the nudges of a rotation's consumer pods and returns the report as it starts. It
// reads only the cache: it never waits for the API server. A newer rotation of the same owner
// replaces one whose nudges have not all run (its pods are nudged for the newer token instead).
func (n *Nudger) Rotated(ctx context.Context, r Rotation) (Report, error) {
	mounted, notUpdatable, err := n.Consumers(ctx, r.Owner.Namespace, r.Secret)
	if err != nil {
		return Report{}, err
	}
	now := n.opts.Clock.Now()
	rep := &Report{TokenIssuedAt: r.TokenIssuedAt, Pods: len(mounted), NotUpdatable: notUpdatable, Done: len(mounted) == 0, created: now}
	n.mu.Lock()
	n.prune(now)
	n.reports[r.Owner] = rep
	if len(mounted) > 0 {
		n.pending[r.Owner] = &job{rot: r, pods: mounted}
	} else {
		delete(n.pending, r.Owner)
	}
	out := rep.clone()
	n.mu.Unlock()
	if len(mounted) > 0 {
		n.queue.Add(r.Owner)
	}
	return out, nil
}

// Report returns the report of owner's last rotation, if this process has one.
func (n *Nudger) Report(owner types.NamespacedName) (Report, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.reports[owner]
	if !ok {
		return Report{}, false
	}
	return r.clone(), true
}

// Forget drops what the Nudger holds for a deleted owner: its report, and the nudges of its
// last rotation that have not run yet (a job in flight stops before its next pod).
func (n *Nudger) Forget(owner types.NamespacedName) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.reports, owner)
	delete(n.pending, owner)
}

// reportTTL: a report only has to live until the reconcile that its event triggers has copied it
// into status; an hour covers any retry of that reconcile.
const reportTTL = time.Hour

// prune forgets reports of owners that have not rotated for reportTTL (a safety net: deleted
// owners are forgotten at once by Forget). Called with n.mu held.
func (n *Nudger) prune(now time.Time) {
	for k, r := range n.reports {
		if r.Done && now.Sub(r.created) > reportTTL {
			delete(n.reports, k)
		}
	}
}

func (r *Report) clone() Report {
	c := *r
	c.NotUpdatable = slices.Clone(r.NotUpdatable)
	return c
}

// Start runs the workers until ctx ends.
func (n *Nudger) Start(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		n.queue.ShutDown()
	}()
	var wg sync.WaitGroup
	for range n.opts.Workers {
		wg.Go(func() {
			for n.processNext(ctx) {
			}
		})
	}
	wg.Wait()
	return nil
}

func (n *Nudger) processNext(ctx context.Context) bool {
	owner, shutdown := n.queue.Get()
	if shutdown {
		return false
	}
	defer n.queue.Done(owner)
	n.mu.Lock()
	j := n.pending[owner]
	delete(n.pending, owner)
	n.mu.Unlock()
	if j != nil {
		n.run(ctx, j)
	}
	return true
}

// run nudges a job's pods one after the other, each after a token of the bucket; pods whose nudge
// failed transiently get one more try at the end.
func (n *Nudger) run(ctx context.Context, j *job) {
	n.awaitCache(ctx, j)
	var retry []string
	for _, pod := range j.pods {
		if n.superseded(j) {
			return // a newer rotation nudges every pod again
		}
		out, err := n.nudge(ctx, j, pod)
		if ctx.Err() != nil {
			return
		}
		if out == OutcomeThrottled || out == OutcomeError {
			retry = append(retry, pod)
			continue
		}
		n.record(j, pod, out, err)
	}
	if len(retry) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-n.opts.Clock.After(n.opts.RetryDelay):
		}
		for _, pod := range retry {
			if n.superseded(j) {
				return
			}
			out, err := n.nudge(ctx, j, pod)
			if ctx.Err() != nil {
				return
			}
			n.record(j, pod, out, err)
		}
	}
	n.finish(ctx, j)
}

// awaitCache waits until the operator's own cache shows the new Secret, at most CacheWait.
//
// Why: the kubelet rewrites the volume from its own copy of the Secret, kept by a watch, when it
// syncs the pod; nothing orders that watch before the pod's. If the pod sync ran before the
// kubelet's copy had the new token, it would write the old one again, and the new one would wait
// for the periodic sync. Measured on a real node, the kubelet tolerates a pod update that comes up
// to ~50 ms *before* the Secret update (its pod sync takes that long to read the Secret), not
// 150 ms. The operator's cache is fed by the same API server watch cache as the kubelet's
// watch, so once the operator sees the new Secret the API server has sent it to the kubelet too.
// The wait costs a few milliseconds and no request.
func (n *Nudger) awaitCache(ctx context.Context, j *job) {
	if j.rot.Shows == nil {
		return
	}
	key := types.NamespacedName{Namespace: j.rot.Owner.Namespace, Name: j.rot.Secret}
	deadline := n.opts.Clock.Now().Add(n.opts.CacheWait)
	for {
		var s corev1.Secret
		if err := n.c.Get(ctx, key, &s); err == nil && j.rot.Shows(&s) {
			return
		}
		if n.opts.Clock.Now().After(deadline) {
			log.FromContext(ctx).V(1).Info("The cache does not show the new Secret yet; nudging anyway", "secret", key.String(), "waited", n.opts.CacheWait)
			return
		}
		if n.superseded(j) || ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-n.opts.Clock.After(5 * time.Millisecond):
		}
	}
}

// nudge patches the annotation on one pod: a JSON merge patch without a resourceVersion, so that
// it never conflicts with the controllers that own the pod.
func (n *Nudger) nudge(ctx context.Context, j *job, pod string) (string, error) {
	if err := n.limiter.Wait(ctx); err != nil {
		return OutcomeThrottled, err // the operator stops: run returns without counting it
	}
	body := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, authv1alpha1.AnnotationTokenRotatedAt, j.rot.WrittenAt.UTC().Format(time.RFC3339Nano))
	obj := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: j.rot.Owner.Namespace, Name: pod},
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := n.c.Patch(pctx, obj, client.RawPatch(types.MergePatchType, body))
	out := outcomeOf(err)
	metrics.PodNudge(out, n.opts.Clock.Since(j.rot.WrittenAt))
	if err != nil && out != OutcomeGone {
		log.FromContext(ctx).V(1).Info("Could not nudge a consumer pod", "pod", types.NamespacedName{Namespace: j.rot.Owner.Namespace, Name: pod}.String(), "outcome", out, "error", err.Error())
	}
	return out, err
}

func outcomeOf(err error) string {
	switch {
	case err == nil:
		return OutcomeNudged
	case apierrors.IsNotFound(err):
		return OutcomeGone
	case apierrors.IsForbidden(err):
		return OutcomeForbidden
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return OutcomeRejected
	case apierrors.IsTooManyRequests(err), apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), errors.Is(err, context.DeadlineExceeded):
		return OutcomeThrottled
	default:
		return OutcomeError
	}
}

// superseded: a newer rotation of the same owner is waiting.
func (n *Nudger) superseded(j *job) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pending[j.rot.Owner] != nil
}

// record adds one outcome to the job's report (unless a newer rotation replaced it).
func (n *Nudger) record(j *job, pod, out string, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.reports[j.rot.Owner]
	if r == nil || !r.TokenIssuedAt.Equal(j.rot.TokenIssuedAt) {
		return
	}
	switch out {
	case OutcomeNudged:
		r.Nudged++
		r.LastNudge = n.opts.Clock.Now()
	case OutcomeGone:
		r.Gone++
	default:
		r.Failed++
		if r.FirstFailure == "" {
			r.FirstFailure = fmt.Sprintf("pod %s: %s (%v)", pod, out, err)
		}
	}
}

// finish marks the report done and tells the reconciler.
func (n *Nudger) finish(_ context.Context, j *job) {
	n.mu.Lock()
	r := n.reports[j.rot.Owner]
	if r != nil && r.TokenIssuedAt.Equal(j.rot.TokenIssuedAt) {
		r.Done = true
	}
	n.mu.Unlock()
	if n.opts.Notify != nil {
		n.opts.Notify(j.rot.Owner)
	}
}
