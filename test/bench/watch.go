package main

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// secretVersion is what the harness knows of one version of a token Secret.
type secretVersion struct {
	IssuedAt, RenewAt, ExpiresAt time.Time
	Seen                         time.Time // when the harness saw it
}

// Watcher follows one namespace's resources and token Secrets with informers, stamping every
// change with the harness's clock.
type Watcher struct {
	mu       sync.Mutex
	readyAt  map[string]time.Time
	rotSeen  []time.Time // each new token version (issued-at changed), when seen
	current  map[string]secretVersion
	versions []versionChange
	expired  map[string]time.Time // name/expiresAt → when it was found expired
	cancel   context.CancelFunc
}

type versionChange struct {
	Name      string
	Prev, New secretVersion
}

func (e *Env) watch(ctx context.Context, ns string) (*Watcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{readyAt: map[string]time.Time{}, current: map[string]secretVersion{}, expired: map[string]time.Time{}, cancel: cancel}
	ca, err := crcache.New(e.Cfg, crcache.Options{
		Scheme:            scheme(),
		DefaultNamespaces: map[string]crcache.Config{ns: {}},
		ByObject: map[client.Object]crcache.ByObject{
			&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{labelManagedBy: managedByValue})},
		},
	})
	if err != nil {
		cancel()
		return nil, err
	}
	ti, err := ca.GetInformer(ctx, &authv1alpha1.MLflowAccessToken{})
	if err != nil {
		cancel()
		return nil, err
	}
	onToken := func(obj any) {
		t, ok := obj.(*authv1alpha1.MLflowAccessToken)
		if !ok || !meta.IsStatusConditionTrue(t.Status.Conditions, authv1alpha1.ConditionReady) {
			return
		}
		now := time.Now()
		w.mu.Lock()
		if _, seen := w.readyAt[t.Name]; !seen {
			w.readyAt[t.Name] = now
		}
		w.mu.Unlock()
	}
	if _, err := ti.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: onToken, UpdateFunc: func(_, n any) { onToken(n) }}); err != nil {
		cancel()
		return nil, err
	}
	si, err := ca.GetInformer(ctx, &corev1.Secret{})
	if err != nil {
		cancel()
		return nil, err
	}
	onSecret := func(obj any) {
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return
		}
		v := parseVersion(s)
		if v.IssuedAt.IsZero() {
			return
		}
		v.Seen = time.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		prev, had := w.current[s.Name]
		if had && prev.IssuedAt.Equal(v.IssuedAt) {
			return
		}
		w.current[s.Name] = v
		w.rotSeen = append(w.rotSeen, v.Seen)
		if had {
			w.versions = append(w.versions, versionChange{Name: s.Name, Prev: prev, New: v})
			if v.Seen.After(prev.ExpiresAt) {
				w.expired[s.Name+"/"+prev.ExpiresAt.String()] = v.Seen
			}
		}
	}
	if _, err := si.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: onSecret, UpdateFunc: func(_, n any) { onSecret(n) }}); err != nil {
		cancel()
		return nil, err
	}
	go func() { _ = ca.Start(ctx) }()
	if !ca.WaitForCacheSync(ctx) {
		cancel()
		return nil, ctx.Err()
	}
	// Tokens that expire while nobody writes a new one are found by this sweep.
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				w.mu.Lock()
				for name, v := range w.current {
					if now.After(v.ExpiresAt) {
						k := name + "/" + v.ExpiresAt.String()
						if _, ok := w.expired[k]; !ok {
							w.expired[k] = now
						}
					}
				}
				w.mu.Unlock()
			}
		}
	}()
	return w, nil
}

func parseVersion(s *corev1.Secret) secretVersion {
	var v secretVersion
	v.IssuedAt, _ = time.Parse(time.RFC3339, s.Annotations[annIssuedAt])
	v.RenewAt, _ = time.Parse(time.RFC3339, s.Annotations[annRenewAt])
	v.ExpiresAt, _ = time.Parse(time.RFC3339, string(s.Data["expiresAt"]))
	return v
}

func (w *Watcher) Stop() { w.cancel() }

func (w *Watcher) ReadyCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.readyAt)
}

func (w *Watcher) ReadyTimes() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]time.Time, len(w.readyAt))
	for k, v := range w.readyAt {
		out[k] = v
	}
	return out
}

// Expired counts token versions found past their expiry without a successor, in [from, to].
func (w *Watcher) Expired(from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, at := range w.expired {
		if !at.Before(from) && !at.After(to) {
			n++
		}
	}
	return n
}

// Current is a snapshot of every Secret's current version.
func (w *Watcher) Current() map[string]secretVersion {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]secretVersion, len(w.current))
	for k, v := range w.current {
		out[k] = v
	}
	return out
}

// Changes returns the version changes seen in [from, to].
func (w *Watcher) Changes(from, to time.Time) []versionChange {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []versionChange
	for _, c := range w.versions {
		if !c.New.Seen.Before(from) && !c.New.Seen.After(to) {
			out = append(out, c)
		}
	}
	return out
}

// RotationTimes returns when each new token version was seen.
func (w *Watcher) RotationTimes() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.rotSeen...)
}
