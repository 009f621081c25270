// Package wake is the one way background workers bring a resource back to its controller: the
// MLflow acceptance check when its answer is in, the nudger when a rotation's nudges are done, a
// watched credential when it changes. Notify(key) puts the key into the controller's work queue
// at once; it never blocks and never starts a goroutine (the work queue folds repeated keys).
// Before the controller has started, keys wait in a set, bounded by the number of distinct keys
// and by maxPending: a key dropped there is a resource whose own requeue still comes.
//
// A Source may map a key to the requests it concerns (a credential to the tokens of the issuers
// that use it). The mapping runs in the notifier's goroutine after the controller started (the
// caches are then synced), before that when the controller starts.
package wake

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// maxPending bounds the keys kept before the controller starts.
const maxPending = 10000

// Map turns a notified key into the requests to reconcile.
type Map func(ctx context.Context, key types.NamespacedName) []reconcile.Request

// Source is a controller-runtime source fed by Notify.
type Source struct {
	name    string
	mapFn   Map
	mu      sync.Mutex
	ctx     context.Context
	queue   workqueue.TypedRateLimitingInterface[reconcile.Request]
	pending map[types.NamespacedName]struct{}
	dropped int
}

var _ source.Source = (*Source)(nil)

// New returns a Source; mapFn nil means the key is the request.
func New(name string, mapFn Map) *Source {
	return &Source{name: name, mapFn: mapFn, pending: map[types.NamespacedName]struct{}{}}
}

// Notify brings key back to the controller.
func (s *Source) Notify(key types.NamespacedName) {
	s.mu.Lock()
	q, ctx := s.queue, s.ctx
	if q == nil {
		if len(s.pending) < maxPending {
			s.pending[key] = struct{}{}
		} else {
			s.dropped++
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.add(ctx, q, key)
}

func (s *Source) add(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], key types.NamespacedName) {
	if s.mapFn == nil {
		q.Add(reconcile.Request{NamespacedName: key})
		return
	}
	for _, r := range s.mapFn(ctx, key) {
		q.Add(r)
	}
}

// Start implements source.Source: from now on keys go straight into queue.
func (s *Source) Start(ctx context.Context, queue workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	s.mu.Lock()
	s.ctx, s.queue = ctx, queue
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for k := range pending {
		s.add(ctx, queue, k)
	}
	return nil
}

// Dropped is how many keys found the pending set full before the controller started.
func (s *Source) Dropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

func (s *Source) String() string { return "wake/" + s.name }
