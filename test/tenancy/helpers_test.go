package tenancy

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

func yamlUnmarshal(b []byte, o any) error { return yaml.Unmarshal(b, o) }
func jsonUnmarshal(b []byte, o any) error { return json.Unmarshal(b, o) }

// viaIssuer is a resource of namespace ns that gets its tokens through the platform's issuer.
func viaIssuer(ns, name string, grant authv1alpha1.GrantSpec) *authv1alpha1.MLflowAccessToken {
	return &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			IssuerRef: &authv1alpha1.IssuerRef{Kind: authv1alpha1.KindClusterKeycloakIssuer, Name: issuerName},
			Grant:     grant,
		}}
}

func mustCreate(t *testing.T, c client.Client, o client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), o); err != nil {
		t.Fatalf("creating %T %s/%s: %v", o, o.GetNamespace(), o.GetName(), err)
	}
}

func getToken(t *testing.T, ns, name string) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	o := &authv1alpha1.MLflowAccessToken{}
	if err := admin.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, o); err != nil {
		t.Fatal(err)
	}
	return o
}

func getSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := admin.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func condOf(o *authv1alpha1.MLflowAccessToken, typ string) string {
	c := meta.FindStatusCondition(o.Status.Conditions, typ)
	if c == nil {
		return ""
	}
	return string(c.Status) + "/" + c.Reason
}

// waitReady waits until the resource's Ready is True and returns it.
func waitReady(t *testing.T, ns, name string) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	var o *authv1alpha1.MLflowAccessToken
	testenv.Eventually(t, 60*time.Second, ns+"/"+name+" Ready", func() (bool, string) {
		o = getToken(t, ns, name)
		return strings.HasPrefix(condOf(o, authv1alpha1.ConditionReady), "True/"), condOf(o, authv1alpha1.ConditionReady)
	})
	return o
}

// waitCond waits until a condition reads want ("Status/Reason").
func waitCond(t *testing.T, ns, name, typ, want string) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	var o *authv1alpha1.MLflowAccessToken
	testenv.Eventually(t, 60*time.Second, ns+"/"+name+" "+typ+"="+want, func() (bool, string) {
		o = getToken(t, ns, name)
		return condOf(o, typ) == want, condOf(o, typ)
	})
	return o
}

// waitRotations waits until the resource rotated at least n times after after.
func waitRotations(t *testing.T, ns, name string, after int64, n int64) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	var o *authv1alpha1.MLflowAccessToken
	testenv.Eventually(t, 90*time.Second, ns+"/"+name+" rotating", func() (bool, string) {
		o = getToken(t, ns, name)
		return o.Status.Rotations >= after+n && strings.HasPrefix(condOf(o, authv1alpha1.ConditionReady), "True/"),
			condOf(o, authv1alpha1.ConditionReady)
	})
	return o
}

// waitGone waits until the resource no longer exists.
func waitGone(t *testing.T, ns, name string) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, ns+"/"+name+" gone", func() (bool, string) {
		err := admin.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &authv1alpha1.MLflowAccessToken{})
		return err != nil, "still there"
	})
}

// waitEvent waits for an event about the resource whose reason is reason and whose note holds
// every part.
func waitEvent(t *testing.T, ns, name, reason string, parts ...string) string {
	t.Helper()
	var note string
	testenv.Eventually(t, 60*time.Second, "a "+reason+" event about "+ns+"/"+name, func() (bool, string) {
		var l eventsv1.EventList
		if err := admin.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		for _, e := range l.Items {
			if e.Regarding.Name != name || e.Reason != reason {
				continue
			}
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(e.Note, p)
			}
			if ok {
				note = e.Note
				return true, ""
			}
		}
		return false, "no such event yet"
	})
	return note
}

// noEvent fails when an event of the reason exists about the resource.
func noEvent(t *testing.T, ns, name, reason string) {
	t.Helper()
	if eventExists(t, ns, name, reason) {
		t.Errorf("an event %s about %s/%s", reason, ns, name)
	}
}

// eventExists reports whether an event of the reason exists about the resource.
func eventExists(t *testing.T, ns, name, reason string) bool {
	t.Helper()
	var l eventsv1.EventList
	if err := admin.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			return true
		}
	}
	return false
}

// expiryWatch polls the tenant's resources and their Secrets, as a GitOps tool and a pod would,
// and adds up the time a resource read Ready=True while its Secret held a token whose own exp
// claim had passed. A tenant's edit is seen by the operator a moment after it lands (the watch
// event), and until then status cannot know of it: so a state counts from its second poll in a
// row on (a reaction time of up to one poll, 200 ms, is allowed); raw counts the first too.
type expiryWatch struct {
	mu      sync.Mutex
	expired map[string]time.Duration
	last    map[string]bool
	raw     int
	polls   int
	stop    chan struct{}
	done    chan struct{}
}

func watchExpiry(ns string) *expiryWatch {
	w := &expiryWatch{expired: map[string]time.Duration{}, last: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	const every = 200 * time.Millisecond
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			var l authv1alpha1.MLflowAccessTokenList
			if err := admin.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
				continue
			}
			now := time.Now()
			for i := range l.Items {
				o := &l.Items[i]
				if !strings.HasPrefix(condOf(o, authv1alpha1.ConditionReady), "True/") {
					w.mu.Lock()
					w.last[o.Name] = false
					w.mu.Unlock()
					continue
				}
				s := &corev1.Secret{}
				if err := admin.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: o.SecretNameOrDefault()}, s); err != nil {
					continue
				}
				c, err := jwtclaims.Parse(string(s.Data[tokensecret.KeyToken]))
				bad := err != nil || (!c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt))
				w.mu.Lock()
				w.polls++
				if bad {
					w.raw++
					if w.last[o.Name] {
						w.expired[o.Name] += every
					}
				}
				w.last[o.Name] = bad
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// total is the time any resource read Ready=True over a token that was expired (or not a
// token) beyond one poll, the polls that saw it at all (raw), and the polls made.
func (w *expiryWatch) total() (d time.Duration, raw, polls int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.expired {
		d += e
	}
	return d, w.raw, w.polls
}

func (w *expiryWatch) close() {
	close(w.stop)
	<-w.done
}
