package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak/keycloaktest"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/seal"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// The scenario tests drive Reconcile without servers: controller-runtime's fake client stands in
// for the API server (and its cache), keycloaktest for Keycloak, and a fake clock for time, so a
// renewal schedule of minutes runs in microseconds. Real-server behaviour stays covered by
// test/integration.

const (
	testNS       = "team-a"
	testName     = "train"
	testClient   = "mlflow-operator"
	testSecret   = "s3cr3t"
	clientSecret = "mlflow-client"
)

// env is one scenario's world.
type env struct {
	t   *testing.T
	ctx context.Context
	clk *clocktesting.FakeClock
	kc  *keycloaktest.Fake
	c   client.Client
	rec *events.FakeRecorder
	r   *MLflowAccessTokenReconciler
	// start is when the scenario starts: the fake clock starts at the wall clock's second,
	// because the fake API server stamps deletion timestamps with the wall clock.
	start time.Time
	// last is the result of the last reconcile.
	last ctrl.Result
	// Faults of the API server, switched on by scenarios.
	secretCreate, secretUpdate, statusPatch func(dryRun bool) error
	uncachedGet                             func(key client.ObjectKey) error
	sent                                    []string
	// uncachedReads counts reads through the APIReader (API requests in a real cluster).
	uncachedReads int
	// staleResource, when set, is what the cache answers for the resource (a cache that missed
	// an update); reads through the APIReader see the real one.
	staleResource *authv1alpha1.MLflowAccessToken
	uncachedRead  bool
	// tokenRequests counts service-account TokenRequests; each takes tokenRequestLatency of real
	// time (0: none), so that concurrent callers overlap as they would against an API server.
	tokenRequests       int
	tokenRequestLatency time.Duration
}

func baseResource() *authv1alpha1.MLflowAccessToken {
	return &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: testName, UID: "uid-train", Generation: 1},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			Keycloak: &authv1alpha1.KeycloakSpec{URL: "https://keycloak.example.com", Realm: "mlflow", ClientID: testClient,
				ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: clientSecret, Key: "client-secret"}},
			Grant: authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		},
	}
}

func userSecret(name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

// newEnv builds the world with the resource (changed by mutate) and its client secret.
func newEnv(t *testing.T, mutate func(*authv1alpha1.MLflowAccessToken), extra ...client.Object) *env {
	t.Helper()
	start := time.Now().Truncate(time.Second)
	e := &env{t: t, ctx: context.Background(), start: start, clk: clocktesting.NewFakeClock(start), rec: events.NewFakeRecorder(1000)}
	e.kc = keycloaktest.New(e.clk, testClient, testSecret)
	obj := baseResource()
	if mutate != nil {
		mutate(obj)
	}
	objs := append([]client.Object{obj, userSecret(clientSecret, map[string]string{"client-secret": testSecret})}, extra...)
	e.c = withOperatorIndexes(fake.NewClientBuilder().WithScheme(scheme.New())).WithObjects(objs...).
		WithStatusSubresource(&authv1alpha1.MLflowAccessToken{}, &authv1alpha1.KeycloakIssuer{}, &authv1alpha1.ClusterKeycloakIssuer{}).
		WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, o client.Object, opts ...client.GetOption) error {
				if r, ok := o.(*authv1alpha1.MLflowAccessToken); ok && e.staleResource != nil && !e.uncachedRead && k == client.ObjectKeyFromObject(e.staleResource) {
					e.staleResource.DeepCopyInto(r)
					return nil
				}
				return c.Get(ctx, k, o, opts...)
			},
			Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
				if _, ok := o.(*corev1.Secret); ok && e.secretCreate != nil {
					if err := e.secretCreate(isDryRun(opts)); err != nil {
						return err
					}
				}
				return c.Create(ctx, o, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
				if _, ok := o.(*corev1.Secret); ok && e.secretUpdate != nil {
					co := &client.UpdateOptions{}
					co.ApplyOptions(opts)
					if err := e.secretUpdate(len(co.DryRun) > 0); err != nil {
						return err
					}
				}
				return c.Update(ctx, o, opts...)
			},
			SubResourceCreate: func(ctx context.Context, c client.Client, sub string, o client.Object, req client.Object, opts ...client.SubResourceCreateOption) error {
				if tr, ok := req.(*authenticationv1.TokenRequest); ok && sub == "token" {
					if err := c.Get(ctx, client.ObjectKeyFromObject(o), &corev1.ServiceAccount{}); err != nil {
						return err
					}
					time.Sleep(e.tokenRequestLatency)
					e.tokenRequests++
					tr.Status.Token = keycloaktest.ServiceAccountJWT(o.GetNamespace(), o.GetName(), e.tokenRequests)
					tr.Status.ExpirationTimestamp = metav1.NewTime(e.clk.Now().Add(time.Duration(*tr.Spec.ExpirationSeconds) * time.Second))
					return nil
				}
				return c.SubResource(sub).Create(ctx, o, req, opts...)
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
				if e.statusPatch != nil {
					if err := e.statusPatch(false); err != nil {
						return err
					}
				}
				return c.SubResource(sub).Patch(ctx, o, p, opts...)
			},
		}).Build()
	cfg := DefaultConfig()
	cfg.Backoff = policy.Backoff{Initial: 2 * time.Second, Max: time.Minute}
	cfg.RevocationTimeout = 2 * time.Minute
	cfg.ClusterResourceNamespace = "mto-system"
	e.r = &MLflowAccessTokenReconciler{Client: e.c, APIReader: uncached{e}, Recorder: e.rec, Keycloak: e.kc, Clock: e.clk, Config: cfg, Watched: watchedStore{e.c}, Seal: testKeys}
	return e
}

// testKeys seal the scenarios' Secrets.
var testKeys = seal.MustKeys([]byte("scenario-test-key-0123456789abcdef"))

// withOperatorIndexes adds the field indexes the operator's cache has.
func withOperatorIndexes(b *fake.ClientBuilder) *fake.ClientBuilder {
	return b.WithIndex(&authv1alpha1.MLflowAccessToken{}, IndexSessionID, indexSessionID).
		WithIndex(&corev1.Secret{}, IndexSecretController, indexSecretController)
}

func isDryRun(opts []client.CreateOption) bool {
	co := &client.CreateOptions{}
	co.ApplyOptions(opts)
	return len(co.DryRun) > 0
}

// uncached is the APIReader: the same store, but its reads can fail while the cache answers.
type uncached struct{ e *env }

func (u uncached) Get(ctx context.Context, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
	u.e.uncachedReads++
	u.e.uncachedRead = true
	defer func() { u.e.uncachedRead = false }()
	if u.e.uncachedGet != nil {
		if err := u.e.uncachedGet(key); err != nil {
			return err
		}
	}
	return u.e.c.Get(ctx, key, o, opts...)
}

func (u uncached) List(ctx context.Context, l client.ObjectList, opts ...client.ListOption) error {
	return u.e.c.List(ctx, l, opts...)
}

var key = types.NamespacedName{Namespace: testNS, Name: testName}

// reconcile runs one reconcile and fails the test on an error.
func (e *env) reconcile() ctrl.Result {
	e.t.Helper()
	res, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: key})
	if err != nil {
		e.t.Fatalf("Reconcile at %s: %v", e.clk.Now().Format(time.TimeOnly), err)
	}
	e.last = res
	return res
}

// reconcileErr runs one reconcile that must fail with an error (an unclassified failure).
func (e *env) reconcileErr() error {
	e.t.Helper()
	_, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: key})
	if err == nil {
		e.t.Fatal("Reconcile succeeded, want an error")
	}
	return err
}

// next waits as the work queue would (the last RequeueAfter) and reconciles.
func (e *env) next() ctrl.Result {
	e.t.Helper()
	if e.last.RequeueAfter <= 0 {
		e.t.Fatalf("no requeue was asked for (%+v)", e.last)
	}
	e.clk.Step(e.last.RequeueAfter)
	return e.reconcile()
}

func (e *env) obj() *authv1alpha1.MLflowAccessToken {
	e.t.Helper()
	o := &authv1alpha1.MLflowAccessToken{}
	if err := e.c.Get(e.ctx, key, o); err != nil {
		e.t.Fatal(err)
	}
	return o
}

// update changes the resource as a user would; a spec change bumps the generation (the fake
// client does not).
func (e *env) update(specChange bool, mutate func(*authv1alpha1.MLflowAccessToken)) {
	e.t.Helper()
	o := e.obj()
	mutate(o)
	if specChange {
		o.Generation++
	}
	if err := e.c.Update(e.ctx, o); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) secret(name string) *corev1.Secret {
	e.t.Helper()
	s := &corev1.Secret{}
	if err := e.c.Get(e.ctx, types.NamespacedName{Namespace: testNS, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		e.t.Fatal(err)
	}
	return s
}

// token is the access token in the consumer Secret ("" when there is none).
func (e *env) token() string {
	e.t.Helper()
	s := e.secret(testName)
	if s == nil {
		return ""
	}
	return string(s.Data[tokensecret.KeyToken])
}

// cond returns a condition of the resource as "Status/Reason" ("" when absent).
func (e *env) cond(typ string) string {
	e.t.Helper()
	c := meta.FindStatusCondition(e.obj().Status.Conditions, typ)
	if c == nil {
		return ""
	}
	return string(c.Status) + "/" + c.Reason
}

func (e *env) wantCond(typ, want string) {
	e.t.Helper()
	if got := e.cond(typ); got != want {
		c := meta.FindStatusCondition(e.obj().Status.Conditions, typ)
		msg := ""
		if c != nil {
			msg = c.Message
		}
		e.t.Fatalf("%s = %q, want %q (message %q)", typ, got, want, msg)
	}
}

// events returns the events recorded since the last call.
func (e *env) events() []string {
	for {
		select {
		case ev := <-e.rec.Events:
			e.sent = append(e.sent, ev)
		default:
			out := e.sent
			e.sent = nil
			return out
		}
	}
}

// wantEvent checks that an event containing every part was recorded since the last call.
func (e *env) wantEvent(parts ...string) {
	e.t.Helper()
	evs := e.events()
	for _, ev := range evs {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(ev, p)
		}
		if ok {
			return
		}
	}
	e.t.Fatalf("no event with %q among %q", parts, evs)
}

// wantCalls checks the Keycloak calls of a kind so far.
func (e *env) wantCalls(kind string, n int) {
	e.t.Helper()
	if got := e.kc.Calls(kind); got != n {
		e.t.Fatalf("%d %s calls to Keycloak, want %d", got, kind, n)
	}
}

func forbidden() error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, testName, errors.New("User \"system:serviceaccount:mto:manager\" cannot create resource \"secrets\" in namespace \"team-a\""))
}

func unavailable() error {
	return apierrors.NewServiceUnavailable("the API server is shutting down")
}

// watchedStore stands in for the watches of issuers' credentials: reads from the store, counted
// as no API request (as the watches are).
type watchedStore struct{ c client.Client }

func (w watchedStore) Secret(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	return s, w.c.Get(ctx, key, s)
}

func (w watchedStore) ConfigMap(ctx context.Context, key types.NamespacedName) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{}
	return cm, w.c.Get(ctx, key, cm)
}
