package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

func secretAt(name, rv, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: rv,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "mlflow-token-operator"}},
		Data: map[string][]byte{"token": []byte(token)},
	}
}

func TestNotOwnWrite(t *testing.T) {
	var w ownWrites
	p := notOwnWrite{&w}

	// Nothing recorded (a fresh process): every event passes, the cache is not trusted.
	if !p.Create(event.CreateEvent{Object: secretAt("a", "1", "t1")}) || w.isLatest(secretAt("a", "1", "t1")) || w.isLatest(nil) {
		t.Fatal("an unrecorded Secret must pass and not count as the latest own write")
	}

	// The write is on its way: its event may arrive before the call returns.
	mine := secretAt("a", "", "t2")
	w.expect(mine)
	if p.Update(event.UpdateEvent{ObjectOld: secretAt("a", "4", "t1"), ObjectNew: secretAt("a", "5", "t2")}) {
		t.Error("the event of our own update, arriving before the call returned, passed")
	}
	if w.isLatest(secretAt("a", "5", "t2")) {
		t.Error("the cache was trusted before the write returned")
	}
	mine.ResourceVersion = "5"
	w.record(mine)
	if p.Update(event.UpdateEvent{ObjectOld: secretAt("a", "4", "t1"), ObjectNew: secretAt("a", "5", "t2")}) {
		t.Error("the event of our own update passed")
	}
	if !w.isLatest(secretAt("a", "5", "t2")) || w.isLatest(secretAt("a", "4", "t1")) {
		t.Error("isLatest must hold for exactly the version written last")
	}

	// Edits by someone else pass: data, labels, annotations.
	edited := secretAt("a", "6", "tampered")
	if !p.Update(event.UpdateEvent{ObjectOld: secretAt("a", "5", "t2"), ObjectNew: edited}) {
		t.Error("a hand edit of the data was dropped")
	}
	relabelled := secretAt("a", "6", "t2")
	relabelled.Labels["team"] = "b"
	if !p.Update(event.UpdateEvent{ObjectOld: secretAt("a", "5", "t2"), ObjectNew: relabelled}) {
		t.Error("a hand edit of the labels was dropped")
	}
	annotated := secretAt("a", "6", "t2")
	annotated.Annotations = map[string]string{"x": "y"}
	if !p.Update(event.UpdateEvent{ObjectOld: secretAt("a", "5", "t2"), ObjectNew: annotated}) {
		t.Error("a hand edit of the annotations was dropped")
	}
	if !p.Update(event.UpdateEvent{ObjectOld: secretAt("b", "4", "t1"), ObjectNew: secretAt("b", "5", "t2")}) {
		t.Error("another Secret with the same content was dropped")
	}

	// A deletion always passes and forgets the Secret: a re-created one is read afresh.
	if !p.Delete(event.DeleteEvent{Object: secretAt("a", "5", "t2")}) {
		t.Error("a deletion was dropped")
	}
	if w.isLatest(secretAt("a", "5", "t2")) || !p.Create(event.CreateEvent{Object: secretAt("a", "7", "t2")}) {
		t.Error("a deleted Secret still counts as our write")
	}
	if !p.Generic(event.GenericEvent{Object: secretAt("a", "5", "t2")}) {
		t.Error("a generic event was dropped")
	}
}

func TestQueuePriority(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	for _, tc := range []struct {
		name    string
		expires *metav1.Time
		deleted bool
		want    int
	}{
		{"no token yet (first issuance)", nil, false, 0},
		{"valid token: its renewal goes first", at(time.Minute), false, PriorityKeepAlive},
		{"expired token", at(-time.Second), false, 0},
		{"being deleted", at(time.Minute), true, 0},
	} {
		obj := &authv1alpha1.MLflowAccessToken{}
		obj.Status.ExpiresAt = tc.expires
		if tc.deleted {
			obj.DeletionTimestamp = at(-time.Minute)
		}
		if got := queuePriority(obj, now); got == nil || *got != tc.want {
			t.Errorf("%s: priority %v, want %d", tc.name, got, tc.want)
		}
	}
}

func TestSpecOrMetadataChanged(t *testing.T) {
	base := func(mutate func(*authv1alpha1.MLflowAccessToken)) *authv1alpha1.MLflowAccessToken {
		o := &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", Generation: 1}}
		if mutate != nil {
			mutate(o)
		}
		return o
	}
	withFinalizers := func(f ...string) func(*authv1alpha1.MLflowAccessToken) {
		return func(o *authv1alpha1.MLflowAccessToken) { o.Finalizers = f }
	}
	p := specOrMetadataChanged{}
	for _, tc := range []struct {
		name     string
		old, new *authv1alpha1.MLflowAccessToken
		want     bool
	}{
		{"status only", base(nil), base(func(o *authv1alpha1.MLflowAccessToken) { o.Status.Rotations = 3 }), false},
		{"spec change", base(nil), base(func(o *authv1alpha1.MLflowAccessToken) { o.Generation = 2 }), true},
		{"annotation (renew request)", base(nil), base(func(o *authv1alpha1.MLflowAccessToken) { o.Annotations = map[string]string{"x": "y"} }), true},
		{"our own finalizer added", base(nil), base(withFinalizers(authv1alpha1.Finalizer)), false},
		{"our finalizer added next to another", base(withFinalizers("other")), base(withFinalizers("other", authv1alpha1.Finalizer)), false},
		{"our finalizer removed by someone", base(withFinalizers(authv1alpha1.Finalizer)), base(nil), true},
		{"another finalizer added", base(nil), base(withFinalizers("other")), true},
		{"ours and another added at once", base(nil), base(withFinalizers("other", authv1alpha1.Finalizer)), true},
		{"deletion", base(withFinalizers(authv1alpha1.Finalizer)), base(func(o *authv1alpha1.MLflowAccessToken) {
			o.Finalizers = []string{authv1alpha1.Finalizer}
			o.DeletionTimestamp = &metav1.Time{Time: time.Now()}
		}), true},
	} {
		if got := p.Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.new}); got != tc.want {
			t.Errorf("%s: passes = %v, want %v", tc.name, got, tc.want)
		}
	}
}
