package wake

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func newQueue() workqueue.TypedRateLimitingInterface[reconcile.Request] {
	return workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
}

func TestNotifyBeforeAndAfterStart(t *testing.T) {
	s := New("test", nil)
	a, b := types.NamespacedName{Namespace: "ns", Name: "a"}, types.NamespacedName{Namespace: "ns", Name: "b"}
	for range 3 {
		s.Notify(a) // folded while pending
	}
	q := newQueue()
	defer q.ShutDown()
	if err := s.Start(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	if q.Len() != 1 {
		t.Fatalf("%d requests after start, want the one pending key", q.Len())
	}
	s.Notify(b)
	s.Notify(b) // folded by the queue
	if q.Len() != 2 {
		t.Fatalf("%d requests, want 2", q.Len())
	}
}

func TestMapAndBound(t *testing.T) {
	s := New("mapped", func(_ context.Context, k types.NamespacedName) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: k.Namespace, Name: k.Name + "-1"}},
			{NamespacedName: types.NamespacedName{Namespace: k.Namespace, Name: k.Name + "-2"}}}
	})
	for i := range maxPending + 5 {
		s.Notify(types.NamespacedName{Namespace: "ns", Name: string(rune('a'+i%26)) + string(rune(i))})
	}
	if s.Dropped() != 5 {
		t.Fatalf("dropped %d, want 5", s.Dropped())
	}
	q := newQueue()
	defer q.ShutDown()
	_ = s.Start(context.Background(), q)
	if q.Len() != 2*maxPending {
		t.Fatalf("%d requests, want %d (two per key)", q.Len(), 2*maxPending)
	}
}
