// Package controllers holds the MLflowAccessToken reconciler.
//
// Where to look:
//   - mlflowaccesstoken_controller.go: Reconcile (get → finalizer → delete or normal → one status
//     write), wiring and watches;
//   - normal.go: the normal path (decide, check, obtain, write, report); obtain.go: asking
//     Keycloak for a token; chain.go: the refresh chain of the RefreshToken and Password grants;
//   - delete.go: revocation on deletion;
//   - secrets.go: the one writer of the operator's Secrets; inputs.go: reading what the user
//     gives (endpoint, credentials, CA);
//   - status.go: conditions, events and their wording; errors.go: classifying failures.
//
// Every timing rule (when to renew, when to retry, what to do with a chain, when to give up
// revoking) is a pure function in internal/policy; this package gathers the facts and acts.
package controllers

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
)

// Config are the reconciler's tunables. DefaultConfig is the one place their defaults live;
// cmd/main.go's flags start from it.
type Config struct {
	// Backoff after failed attempts.
	Backoff policy.Backoff
	// KeycloakTimeout bounds one exchange with Keycloak (all its requests).
	KeycloakTimeout time.Duration
	// RevocationTimeout is how long after deletion was requested revocation is retried before
	// the deletion finishes without it (with a Warning event).
	RevocationTimeout time.Duration
	// VerifySessionRevocation makes every deletion check with the admin API that the session
	// ended (spec.revocation.verifySessionWithAdminAPI does it per resource).
	VerifySessionRevocation bool
	// OfflineIdleTimeout is the realm's offline session idle timeout, used as the chain's end
	// when Keycloak reports refresh_expires_in 0 for an offline token.
	OfflineIdleTimeout time.Duration
	// RefreshChainWarning: RefreshChainExpiring turns True when a RefreshToken grant's chain
	// ends within this window.
	RefreshChainWarning time.Duration
	// Guardrails limit where the operator sends credentials (plain HTTP, allowed hosts).
	Guardrails Guardrails
	// ClusterResourceNamespace holds the Secrets and ConfigMaps ClusterKeycloakIssuers reference
	// (the operator's own namespace).
	ClusterResourceNamespace string
	// ServiceAccountTokenLifetime is the lifetime asked for service-account tokens that
	// authenticate clients (Kubernetes' minimum is 10 minutes, Keycloak's maximum an hour).
	ServiceAccountTokenLifetime time.Duration
}

// DefaultConfig returns the defaults of the reconciler's tunables.
func DefaultConfig() Config {
	return Config{
		Backoff:             policy.Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute},
		KeycloakTimeout:     15 * time.Second,
		RevocationTimeout:   5 * time.Minute,
		OfflineIdleTimeout:  30 * 24 * time.Hour,
		RefreshChainWarning: 72 * time.Hour,

		ServiceAccountTokenLifetime: time.Hour,
	}
}

// Watched reads the Secrets and ConfigMaps that issuers reference from watches of them
// (internal/objectwatch): no API request per rotation.
type Watched interface {
	Secret(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error)
	ConfigMap(ctx context.Context, key types.NamespacedName) (*corev1.ConfigMap, error)
}

// MLflowAccessTokenReconciler keeps each MLflowAccessToken's Secret filled with a valid token.
type MLflowAccessTokenReconciler struct {
	// Client reads from the cache (which holds only Secrets labelled as ours) and writes.
	client.Client
	// APIReader reads uncached: the user's client secret, and Secrets the cache cannot see.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Keycloak  keycloak.Client
	// Clock is the only source of time of the reconciler (nil: the real clock).
	Clock clock.PassiveClock
	// Watched reads issuers' credentials and CA bundles.
	Watched Watched
	Config

	// unsaved holds refresh chains Keycloak rotated but the API server would not store (it was
	// down): types.UID → tokensecret.Chain. The next reconcile saves them first.
	unsaved sync.Map
	// written: the Secret versions this process wrote last (see ownwrites.go).
	written ownWrites
	// saTokens: service-account tokens that authenticate clients (see satoken.go).
	saTokens saTokens
	// Delivery: nudges of consumer pods and the DeliveryAtRisk check (nudge.go).
	Delivery Delivery
}

// clientCredentials is the grant of ClientCredentials resources (and of the admin API token).
var clientCredentials = keycloak.Grant{Type: keycloak.GrantClientCredentials}

// RBAC, least privilege; docs/security.md says why each rule exists.
// +kubebuilder:rbac:groups=auth.mlflow-token-operator.io,resources=mlflowaccesstokens,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=auth.mlflow-token-operator.io,resources=mlflowaccesstokens/status,verbs=patch
// +kubebuilder:rbac:groups=auth.mlflow-token-operator.io,resources=mlflowaccesstokens/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=serviceaccounts/token,verbs=create

// Reconcile is get → ensure finalizer → delete or normal path → one status write.
func (r *MLflowAccessTokenReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := &authv1alpha1.MLflowAccessToken{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.releaseOrphans(ctx, req.NamespacedName)
		}
		return ctrl.Result{}, err
	}
	if obj.DeletionTimestamp.IsZero() && !controllerutil.ContainsFinalizer(obj, authv1alpha1.Finalizer) {
		patch := client.MergeFrom(obj.DeepCopy())
		controllerutil.AddFinalizer(obj, authv1alpha1.Finalizer)
		if err := r.Patch(ctx, obj, patch); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}

	before := obj.DeepCopy()
	var (
		res  ctrl.Result
		err  error
		gone bool
	)
	if !obj.DeletionTimestamp.IsZero() {
		res, gone, err = r.reconcileDelete(ctx, obj)
	} else {
		res, err = r.reconcileNormal(ctx, obj)
		r.reportMLflow(obj)
		r.reportDelivery(ctx, obj) // consumer pods (nudge.go)
	}
	if gone {
		metrics.Forget(obj.Namespace, obj.Name)
		return res, err
	}
	res, err = r.writeStatus(ctx, before, obj, res, err)
	if res.Priority == nil {
		res.Priority = queuePriority(obj, r.now())
	}
	metrics.Observe(obj)
	return res, err
}

// PriorityKeepAlive is the work queue priority of a resource whose token is still valid: its
// next reconcile (a renewal, or a retry while renewal fails) keeps a live token from expiring, so
// it goes before first issuances, which have the default priority 0. In a burst of thousands of
// new resources, the first renewals then do not wait behind the burst.
const PriorityKeepAlive = 10

// queuePriority is PriorityKeepAlive while obj's token is valid, 0 otherwise.
func queuePriority(obj *authv1alpha1.MLflowAccessToken, now time.Time) *int {
	p := 0
	if obj.DeletionTimestamp.IsZero() && obj.Status.ExpiresAt != nil && now.Before(obj.Status.ExpiresAt.Time) {
		p = PriorityKeepAlive
	}
	return &p
}

// writeStatus is the one status write of a reconcile. It is skipped when nothing changed, and
// guarded by the resourceVersion the decision was based on: if the cached object was stale,
// the write fails with a conflict and the reconcile runs again on fresh data.
func (r *MLflowAccessTokenReconciler) writeStatus(ctx context.Context, before, obj *authv1alpha1.MLflowAccessToken, res ctrl.Result, err error) (ctrl.Result, error) {
	obj.Status.ObservedGeneration = obj.Generation
	if equality.Semantic.DeepEqual(before.Status, obj.Status) {
		return res, err
	}
	perr := r.Status().Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	switch {
	case perr == nil:
		return res, err
	case apierrors.IsConflict(perr) || apierrors.IsNotFound(perr):
		log.FromContext(ctx).V(1).Info("Status write lost a race; reconciling again", "reason", apierrors.ReasonForError(perr))
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, err
	default:
		return ctrl.Result{}, errors.Join(err, perr)
	}
}

func (r *MLflowAccessTokenReconciler) now() time.Time { return r.Clock.Now() }

// IndexIssuerRef indexes MLflowAccessTokens by the issuer they reference ("<kind>/<namespace>/<name>",
// the namespace empty for a ClusterKeycloakIssuer).
const IndexIssuerRef = "spec.issuerRef"

func issuerIndexValue(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

func indexIssuerRef(o client.Object) []string {
	t, ok := o.(*authv1alpha1.MLflowAccessToken)
	if !ok || t.Spec.IssuerRef == nil {
		return nil
	}
	if t.Spec.IssuerRef.Kind == authv1alpha1.KindClusterKeycloakIssuer {
		return []string{issuerIndexValue(authv1alpha1.KindClusterKeycloakIssuer, "", t.Spec.IssuerRef.Name)}
	}
	return []string{issuerIndexValue(authv1alpha1.KindKeycloakIssuer, t.Namespace, t.Spec.IssuerRef.Name)}
}

// SetupWithManager registers the controller. Our own status writes do not trigger a reconcile
// (only spec, annotation, finalizer and deletion changes do); changes to the Secrets we own do,
// so a Secret deleted or edited by hand is restored. An issuer that turns Ready (or not), or whose
// spec changes, and a change of a credential an issuer references (credentialEvents, from the
// Watched store), bring its tokens back at once: a token waiting for its issuer, or failing with a
// client secret that was just rotated, recovers within seconds.
func (r *MLflowAccessTokenReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options, credentialEvents <-chan event.GenericEvent) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &authv1alpha1.MLflowAccessToken{}, IndexIssuerRef, indexIssuerRef); err != nil {
		return err
	}
	tokensOf := func(ctx context.Context, kind string, keys ...types.NamespacedName) []reconcile.Request {
		var reqs []reconcile.Request
		for _, k := range keys {
			var l authv1alpha1.MLflowAccessTokenList
			if err := r.List(ctx, &l, client.MatchingFields{IndexIssuerRef: issuerIndexValue(kind, k.Namespace, k.Name)}); err != nil {
				continue
			}
			for _, t := range l.Items {
				reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: t.Namespace, Name: t.Name}})
			}
		}
		return reqs
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&authv1alpha1.MLflowAccessToken{}, builder.WithPredicates(specOrMetadataChanged{})).
		Owns(&corev1.Secret{}, builder.WithPredicates(notOwnWrite{&r.written})).
		Watches(&authv1alpha1.KeycloakIssuer{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return tokensOf(ctx, authv1alpha1.KindKeycloakIssuer, client.ObjectKeyFromObject(o))
		}), builder.WithPredicates(issuerReadinessChanged{})).
		Watches(&authv1alpha1.ClusterKeycloakIssuer{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return tokensOf(ctx, authv1alpha1.KindClusterKeycloakIssuer, client.ObjectKeyFromObject(o))
		}), builder.WithPredicates(issuerReadinessChanged{})).
		WithOptions(opts).
		Named("mlflowaccesstoken")
	b = r.watchDeliveries(b) // finished nudges update status.consumers (nudge.go)
	if credentialEvents != nil {
		b = b.WatchesRawSource(source.Channel(credentialEvents, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			ns, cluster := issuersUsing(ctx, r.Client, r.ClusterResourceNamespace, client.ObjectKeyFromObject(o))
			return append(tokensOf(ctx, authv1alpha1.KindKeycloakIssuer, ns...), tokensOf(ctx, authv1alpha1.KindClusterKeycloakIssuer, cluster...)...)
		})))
	}
	return b.Complete(r)
}

// issuerReadinessChanged passes issuer updates that change its spec or its Ready condition (not
// its periodic re-checks, which only move lastCheckTime).
type issuerReadinessChanged struct{ predicate.Funcs }

func (issuerReadinessChanged) Update(e event.UpdateEvent) bool {
	if e.ObjectOld == nil || e.ObjectNew == nil {
		return true
	}
	if e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() {
		return true
	}
	ready := func(o client.Object) string {
		var conds []metav1.Condition
		switch v := o.(type) {
		case *authv1alpha1.KeycloakIssuer:
			conds = v.Status.Conditions
		case *authv1alpha1.ClusterKeycloakIssuer:
			conds = v.Status.Conditions
		}
		if c := meta.FindStatusCondition(conds, authv1alpha1.ConditionReady); c != nil {
			return string(c.Status) + "/" + c.Reason + "/" + c.Message
		}
		return ""
	}
	return ready(e.ObjectOld) != ready(e.ObjectNew)
}

// specOrMetadataChanged passes updates that change the spec (generation), annotations,
// finalizers or the deletion timestamp, and drops status-only updates.
type specOrMetadataChanged struct{ predicate.Funcs }

func (specOrMetadataChanged) Update(e event.UpdateEvent) bool {
	if e.ObjectOld == nil || e.ObjectNew == nil {
		return true
	}
	o, n := e.ObjectOld, e.ObjectNew
	return o.GetGeneration() != n.GetGeneration() ||
		!equality.Semantic.DeepEqual(o.GetAnnotations(), n.GetAnnotations()) ||
		(!equality.Semantic.DeepEqual(o.GetFinalizers(), n.GetFinalizers()) && !onlyAddedOurFinalizer(o, n)) ||
		!o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp())
}

// onlyAddedOurFinalizer: the update is the operator's own finalizer patch, made by the reconcile
// that goes on to issue the token; reconciling again for it would only race that reconcile's
// status write. Anyone removing the finalizer, or any other change, still passes.
func onlyAddedOurFinalizer(o, n client.Object) bool {
	return !controllerutil.ContainsFinalizer(o, authv1alpha1.Finalizer) && controllerutil.ContainsFinalizer(n, authv1alpha1.Finalizer) &&
		equality.Semantic.DeepEqual(append(slices.Clone(o.GetFinalizers()), authv1alpha1.Finalizer), n.GetFinalizers())
}
