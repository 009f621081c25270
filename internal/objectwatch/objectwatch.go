// Package objectwatch keeps a few named Secrets and ConfigMaps watched and cached: the client
// secrets and CA bundles that issuers reference. Each object gets a watch of its own, selected by
// name, started on first use and stopped when unused: the operator reads them from memory at
// every rotation (no API request) and hears of a change within a second, without caching every
// Secret of the cluster (a cluster-wide Secret cache is what made controllers use gigabytes in
// large clusters). It fits a small number of objects (issuers are few); tokens' own references
// are read when needed instead.
package objectwatch

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
)

// Kinds this package watches.
const (
	KindSecret    = "Secret"
	KindConfigMap = "ConfigMap"
)

// Key names a watched object.
type Key struct {
	Kind string
	types.NamespacedName
}

func (k Key) String() string { return k.Kind + " " + k.Namespace + "/" + k.Name }

// Store is the set of watches. Its zero value is not usable: use New.
type Store struct {
	client kubernetes.Interface
	// IdleAfter is how long an unused watch lives (default 30 minutes).
	IdleAfter time.Duration
	// SyncTimeout bounds the wait for a new watch's first list (default 10 s).
	SyncTimeout time.Duration

	mu       sync.Mutex
	ctx      context.Context
	entries  map[Key]*entry
	handlers []func(Key)
}

type entry struct {
	store    toolscache.Store
	synced   toolscache.InformerSynced
	stop     context.CancelFunc
	lastUsed time.Time
}

// New returns a Store using c. Start (a manager Runnable) must run before objects are read.
func New(c kubernetes.Interface) *Store {
	return &Store{client: c, IdleAfter: 30 * time.Minute, SyncTimeout: 10 * time.Second, entries: map[Key]*entry{}}
}

// OnChange registers f to be called when a watched object is added, changed or deleted.
func (s *Store) OnChange(f func(Key)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers = append(s.handlers, f)
}

// Start runs until ctx ends, stopping watches that were not used for IdleAfter.
func (s *Store) Start(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			s.mu.Lock()
			for k, e := range s.entries {
				if now.Sub(e.lastUsed) > s.IdleAfter {
					e.stop()
					delete(s.entries, k)
				}
			}
			s.mu.Unlock()
		}
	}
}

// NeedLeaderElection: every replica may serve reads (only the leader reconciles anyway).
func (s *Store) NeedLeaderElection() bool { return false }

// Secret returns the Secret ns/name from its watch, starting the watch on first use. A missing
// Secret gives a NotFound error.
func (s *Store) Secret(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	o, err := s.get(ctx, Key{KindSecret, key})
	if err != nil {
		return nil, err
	}
	return o.(*corev1.Secret).DeepCopy(), nil
}

// ConfigMap returns the ConfigMap ns/name from its watch, starting the watch on first use.
func (s *Store) ConfigMap(ctx context.Context, key types.NamespacedName) (*corev1.ConfigMap, error) {
	o, err := s.get(ctx, Key{KindConfigMap, key})
	if err != nil {
		return nil, err
	}
	return o.(*corev1.ConfigMap).DeepCopy(), nil
}

// Watching reports the keys watched now (for tests and metrics).
func (s *Store) Watching() []Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]Key, 0, len(s.entries))
	for k := range s.entries {
		keys = append(keys, k)
	}
	return keys
}

func (s *Store) get(ctx context.Context, k Key) (runtime.Object, error) {
	e, err := s.entry(k)
	if err != nil {
		return nil, err
	}
	if !e.synced() {
		wctx, cancel := context.WithTimeout(ctx, s.SyncTimeout)
		defer cancel()
		if !toolscache.WaitForCacheSync(wctx.Done(), e.synced) {
			return nil, fmt.Errorf("the watch of %s did not start within %s", k, s.SyncTimeout)
		}
	}
	o, ok, err := e.store.GetByKey(k.Namespace + "/" + k.Name)
	if err != nil {
		return nil, err
	}
	if !ok {
		gr := schema.GroupResource{Resource: "secrets"}
		if k.Kind == KindConfigMap {
			gr.Resource = "configmaps"
		}
		return nil, apierrors.NewNotFound(gr, k.Name)
	}
	return o.(runtime.Object), nil
}

func (s *Store) entry(k Key) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		return nil, fmt.Errorf("objectwatch: Start has not run")
	}
	if e, ok := s.entries[k]; ok {
		e.lastUsed = time.Now()
		return e, nil
	}
	sel := fields.OneTermEqualSelector("metadata.name", k.Name).String()
	var lw *toolscache.ListWatch
	var obj runtime.Object
	switch k.Kind {
	case KindSecret:
		obj = &corev1.Secret{}
		lw = &toolscache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				o.FieldSelector = sel
				return s.client.CoreV1().Secrets(k.Namespace).List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				o.FieldSelector = sel
				return s.client.CoreV1().Secrets(k.Namespace).Watch(ctx, o)
			},
		}
	case KindConfigMap:
		obj = &corev1.ConfigMap{}
		lw = &toolscache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				o.FieldSelector = sel
				return s.client.CoreV1().ConfigMaps(k.Namespace).List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				o.FieldSelector = sel
				return s.client.CoreV1().ConfigMaps(k.Namespace).Watch(ctx, o)
			},
		}
	default:
		return nil, fmt.Errorf("objectwatch: unsupported kind %q", k.Kind)
	}
	notify := func(any) {
		s.mu.Lock()
		hs := append([]func(Key){}, s.handlers...)
		s.mu.Unlock()
		for _, h := range hs {
			h(k)
		}
	}
	store, ctrl := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    obj,
		Handler: toolscache.ResourceEventHandlerFuncs{
			AddFunc:    notify,
			UpdateFunc: func(_, n any) { notify(n) },
			DeleteFunc: notify,
		},
	})
	ctx, cancel := context.WithCancel(s.ctx)
	go ctrl.RunWithContext(ctx)
	e := &entry{store: store, synced: ctrl.HasSynced, stop: cancel, lastUsed: time.Now()}
	s.entries[k] = e
	return e, nil
}
