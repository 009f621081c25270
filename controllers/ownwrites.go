package controllers

import (
	"crypto/sha256"
	"encoding/json"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// ownWrites remembers, per Secret, what this process last wrote to it: a digest of the content
// (taken before the write) and the resourceVersion the API server gave the write. Two things
// follow from it:
//   - the watch event of the operator's own write does not start a second reconcile of the
//     resource (that reconcile found nothing to do, and its status patch raced the first one's,
//     answered 409). Matching on content, not on resourceVersion, also catches the event that
//     arrives before the write call has returned;
//   - when the cache shows exactly the version this process wrote last, the cache is not behind
//     this process, and the uncached read before spending a token can be skipped.
//
// Any other write (a person's edit of data, labels or annotations, a deletion, another process
// writing other content) goes through as before. After a restart the map is empty: everything
// is read afresh.
type ownWrites struct{ m sync.Map } // types.NamespacedName → ownWrite

type ownWrite struct {
	digest [32]byte
	rv     string
}

func keyOf(o client.Object) types.NamespacedName {
	return types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
}

// digest covers everything the operator writes in a Secret.
func digest(s *corev1.Secret) [32]byte {
	b, _ := json.Marshal([]any{s.Labels, s.Annotations, s.Data}) // type: defaulted by the server, immutable
	return sha256.Sum256(b)
}

// expect is called just before s is written.
func (w *ownWrites) expect(s *corev1.Secret) {
	w.m.Store(keyOf(s), ownWrite{digest: digest(s)})
}

// record is called when the write of s succeeded (s carries the new resourceVersion).
func (w *ownWrites) record(s *corev1.Secret) {
	w.m.Store(keyOf(s), ownWrite{digest: digest(s), rv: s.GetResourceVersion()})
}

// isLatest reports whether s is the version this process wrote last.
func (w *ownWrites) isLatest(s *corev1.Secret) bool {
	if s == nil {
		return false
	}
	v, ok := w.m.Load(keyOf(s))
	return ok && v.(ownWrite).rv != "" && v.(ownWrite).rv == s.ResourceVersion
}

// isOwn reports whether o has the content this process wrote (or is writing) last.
func (w *ownWrites) isOwn(o client.Object) bool {
	s, ok := o.(*corev1.Secret)
	if !ok || s == nil {
		return false
	}
	v, ok := w.m.Load(keyOf(s))
	return ok && v.(ownWrite).digest == digest(s)
}

func (w *ownWrites) forget(o client.Object) { w.m.Delete(keyOf(o)) }

// notOwnWrite filters the events of owned Secrets: creates and updates that carry exactly what
// this process wrote are dropped; everything else, and every deletion, passes.
type notOwnWrite struct{ w *ownWrites }

func (p notOwnWrite) Create(e event.CreateEvent) bool { return !p.w.isOwn(e.Object) }

func (p notOwnWrite) Update(e event.UpdateEvent) bool { return !p.w.isOwn(e.ObjectNew) }

func (p notOwnWrite) Delete(e event.DeleteEvent) bool {
	if e.Object != nil {
		p.w.forget(e.Object)
	}
	return true
}

func (p notOwnWrite) Generic(event.GenericEvent) bool { return true }
