// Package mlflowcheck asks an MLflow tracking server whether it accepts an access token, with one
// cheap authenticated read (see probe.go), so that a token MLflow would reject (no audience for
// MLflow, wrong issuer, a user mlflow-oidc-auth does not know) shows in the resource's status
// when it is issued, not in a training job's log hours later.
//
// Checks run in the background on a small worker pool: the reconciler submits a check after it
// wrote a new token and goes on; nothing waits for MLflow. Checks are rate limited by one token
// bucket, deduplicated per resource (a newer token replaces the pending check of an older one),
// and bounded in time (a timeout per request). The last result per resource is kept in a bounded
// store, keyed by the resource and identified by the token's identity (its jti), never the token:
// the token itself lives only in the pending request, until its check runs.
package mlflowcheck

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
)

// Request asks whether the MLflow at TrackingURI accepts Token.
type Request struct {
	// Key names the resource the token belongs to; one check per key is pending at most.
	Key types.NamespacedName
	// TrackingURI is MLflow's base URL (MLFLOW_TRACKING_URI).
	TrackingURI string
	// Token is the access token. It is sent to TrackingURI only, never logged, and dropped when
	// the check has run.
	Token string
	// TokenID identifies the token in results (its jti); never the token itself.
	TokenID string
	// CABundle, when set, adds PEM roots to the system's for MLflow's certificate (the CA bundle
	// the resource gives for Keycloak: private PKIs usually sign both).
	CABundle []byte
}

// Outcome is what a check found.
type Outcome string

// Outcomes of a check.
const (
	// Accepted: MLflow answered 2xx to an authenticated read.
	Accepted Outcome = "Accepted"
	// Rejected: MLflow answered 401 or 403.
	Rejected Outcome = "Rejected"
	// Unreachable: no answer (connection or TLS error, timeout) or a transient one (429, 5xx).
	Unreachable Outcome = "Unreachable"
	// Unexpected: an answer that says neither yes nor no (a redirect, 404, another status).
	Unexpected Outcome = "Unexpected"
	// Expired: the token expired before its turn came (checks are rate limited); not asked.
	Expired Outcome = "Expired"
)

// Result is the outcome of one check. It holds no token material.
type Result struct {
	TokenID     string
	TrackingURI string
	Outcome     Outcome
	// Status is MLflow's HTTP status (0: no answer).
	Status int
	// User is the user name MLflow reported for the token (Accepted, when it says).
	User string
	// Message says what was found, for a person: for a rejection, the likely cause from the
	// token's claims.
	Message   string
	CheckedAt time.Time
}

// Options tune a Checker. Zero values take the defaults of DefaultOptions, except QPS.
type Options struct {
	// Workers is how many checks run at once.
	Workers int
	// QPS and Burst bound the rate of requests to MLflow servers, all together (QPS 0:
	// unlimited, as for Keycloak; DefaultOptions has 5/s).
	QPS   float64
	Burst int
	// Timeout bounds one request to MLflow.
	Timeout time.Duration
	// MaxResults bounds the result store; the least recently checked resource is dropped first
	// (its condition stays as it was: results are a cache, status is the record).
	MaxResults int
	// MaxResponseBytes bounds how much of an answer is read.
	MaxResponseBytes int64
	// Clock (nil: the real clock).
	Clock clock.PassiveClock
	// Log (zero: controller-runtime's logger, named mlflow-check).
	Log logr.Logger
}

// DefaultOptions are the defaults: 2 workers, 5 requests per second with bursts of 10, 10 s per
// request, 20000 results.
func DefaultOptions() Options {
	return Options{Workers: 2, QPS: 5, Burst: 10, Timeout: 10 * time.Second, MaxResults: 20000, MaxResponseBytes: 64 << 10}
}

// Notify is called when a check's result is stored, with the resource it belongs to. It may
// block until ctx ends (the controller feeds a channel).
type Notify func(ctx context.Context, key types.NamespacedName)

// Checker runs checks in the background. It is a controller-runtime Runnable that runs only on
// the leader (see NeedLeaderElection). Submit and Lookup are safe for concurrent use.
type Checker struct {
	opts    Options
	notify  Notify
	clock   clock.PassiveClock
	log     logr.Logger
	limiter *rate.Limiter
	// queue holds the keys with a pending request, each once; a key added while its check runs
	// is handed out again after Done, so the newest request is never lost.
	queue workqueue.TypedInterface[types.NamespacedName]

	mu      sync.Mutex
	pending map[types.NamespacedName]Request
	running map[types.NamespacedName]string // key → TokenID being checked
	results map[types.NamespacedName]*list.Element
	order   *list.List // of *Result keyed entries, least recently stored at the front
	clients map[string]*http.Client
}

type entry struct {
	key types.NamespacedName
	res Result
}

// New returns a Checker; notify (may be nil) is called when a result is in.
func New(o Options, notify Notify) *Checker {
	d := DefaultOptions()
	if o.Workers <= 0 {
		o.Workers = d.Workers
	}
	if o.Burst <= 0 {
		o.Burst = d.Burst
	}
	if o.Timeout <= 0 {
		o.Timeout = d.Timeout
	}
	if o.MaxResults <= 0 {
		o.MaxResults = d.MaxResults
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = d.MaxResponseBytes
	}
	c := &Checker{
		opts:    o,
		notify:  notify,
		clock:   o.Clock,
		log:     o.Log,
		queue:   workqueue.NewTyped[types.NamespacedName](),
		pending: map[types.NamespacedName]Request{},
		running: map[types.NamespacedName]string{},
		results: map[types.NamespacedName]*list.Element{},
		order:   list.New(),
		clients: map[string]*http.Client{},
	}
	if c.clock == nil {
		c.clock = clock.RealClock{}
	}
	if c.log.GetSink() == nil {
		c.log = ctrl.Log.WithName("mlflow-check")
	}
	if o.QPS <= 0 {
		c.limiter = rate.NewLimiter(rate.Inf, 0)
	} else {
		c.limiter = rate.NewLimiter(rate.Limit(o.QPS), o.Burst)
	}
	return c
}

// NeedLeaderElection: only the leader runs checks. Only the leader reconciles, so only it
// submits; and the notification feeds the controller's channel source, which is read only where
// the controller runs: a standby that checked would have nowhere to deliver its result, and the
// status it informs is written by the leader alone.
func (c *Checker) NeedLeaderElection() bool { return true }

// Start runs the workers until ctx ends. A check in flight is cancelled and its result dropped.
func (c *Checker) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() {
			for c.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

// Submit queues a check, replacing a pending check of the same resource (an older token's check
// is pointless once a newer token is in the Secret). It never blocks.
func (c *Checker) Submit(req Request) {
	c.mu.Lock()
	c.pending[req.Key] = req
	c.mu.Unlock()
	c.queue.Add(req.Key)
}

// Lookup returns the last result for key (nil: none) and the TokenID of a check queued or
// running for it ("" when none).
func (c *Checker) Lookup(key types.NamespacedName) (last *Result, pendingTokenID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.results[key]; ok {
		r := el.Value.(*entry).res
		last = &r
	}
	if p, ok := c.pending[key]; ok {
		pendingTokenID = p.TokenID
	} else if id, ok := c.running[key]; ok {
		pendingTokenID = id
	}
	return last, pendingTokenID
}

// Forget drops what is known of key (the resource was deleted).
func (c *Checker) Forget(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, key)
	if el, ok := c.results[key]; ok {
		c.order.Remove(el)
		delete(c.results, key)
	}
}

// next runs one check; false when the queue shut down.
func (c *Checker) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	c.mu.Lock()
	req, ok := c.pending[key]
	delete(c.pending, key)
	if ok {
		c.running[key] = req.TokenID
	}
	c.mu.Unlock()
	if !ok {
		return true // forgotten after it was queued
	}
	res, done := c.check(ctx, req)
	req.Token = "" // not needed any more; the request is not kept, but say so
	c.mu.Lock()
	delete(c.running, key)
	if done {
		c.store(key, res)
	}
	c.mu.Unlock()
	if !done {
		return true
	}
	log := c.log.WithValues("resource", key, "trackingURI", req.TrackingURI, "tokenID", req.TokenID, "outcome", res.Outcome, "status", res.Status)
	if res.Outcome == Rejected {
		log.Info("MLflow rejected the token", "message", res.Message)
	} else {
		log.V(1).Info("Checked whether MLflow accepts the token", "message", res.Message)
	}
	if c.notify != nil {
		c.notify(ctx, key)
	}
	return true
}

// store keeps res as key's last result, dropping the least recently stored results beyond
// MaxResults. c.mu must be held.
func (c *Checker) store(key types.NamespacedName, res Result) {
	if el, ok := c.results[key]; ok {
		el.Value.(*entry).res = res
		c.order.MoveToBack(el)
		return
	}
	c.results[key] = c.order.PushBack(&entry{key: key, res: res})
	for c.order.Len() > c.opts.MaxResults {
		front := c.order.Front()
		delete(c.results, front.Value.(*entry).key)
		c.order.Remove(front)
	}
}

// check runs one request (two when the server has no current-user endpoint). done is false when
// ctx ended before an answer: the Checker is stopping, the result would be a lie.
func (c *Checker) check(ctx context.Context, req Request) (res Result, done bool) {
	expired := func() bool {
		exp := expiryOf(req.Token)
		return !exp.IsZero() && !c.clock.Now().Before(exp)
	}
	result := func(r Result) (Result, bool) {
		r.TokenID, r.TrackingURI, r.CheckedAt = req.TokenID, req.TrackingURI, c.clock.Now()
		return r, true
	}
	if err := c.limiter.Wait(ctx); err != nil {
		return Result{}, false
	}
	if expired() {
		return result(Result{Outcome: Expired, Message: "The token expired before MLflow could be asked (checks are rate limited); the next token is checked"})
	}
	r := c.probe(ctx, req)
	if ctx.Err() != nil {
		return Result{}, false
	}
	return result(r)
}

// client returns the HTTP client for a CA bundle (nil: the system's roots).
func (c *Checker) client(ca []byte) *http.Client {
	key := ""
	if len(ca) > 0 {
		sum := sha256.Sum256(ca)
		key = hex.EncodeToString(sum[:])
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if hc, ok := c.clients[key]; ok {
		return hc
	}
	if len(c.clients) >= maxClients {
		// CA bundles change rarely; a flood of distinct ones (a bug elsewhere) must not grow
		// memory without bound. Idle connections of the dropped clients close with them.
		for k, hc := range c.clients {
			hc.CloseIdleConnections()
			delete(c.clients, k)
		}
	}
	hc := newHTTPClient(ca, c.opts.Timeout)
	c.clients[key] = hc
	return hc
}

const maxClients = 32
