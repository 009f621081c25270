// Package controllers holds the MLflowAccessToken reconciler.
//
// Where to look:
//   - mlflowaccesstoken_controller.go: Reconcile (get → finalizer → delete or normal → one status
//     write); watches.go: what brings a resource back to a reconcile;
//   - normal.go: the normal path (decide, check, obtain, write, report); obtain.go: asking
//     Keycloak for a token; chain.go: the refresh chain of the RefreshToken and Password grants;
//   - delete.go: revocation on deletion; keep.go: what revocation needs kept (finalizers on the
//     operator's Secrets, the kit), for namespace deletions in any order;
//   - target.go: where and as whom (inline Keycloak or issuer); guardrails.go: where credentials
//     may go; inputs.go: reading the credentials and CA; satoken.go: service-account tokens;
//   - secrets.go: the one writer of the operator's Secrets;
//   - status.go: conditions, events and their wording; errors.go: classifying failures;
//   - mlflow.go: does MLflow accept the token; issuer_controller.go: the issuers' checks.
//
// Every timing rule (when to renew, when to retry, what to do with a chain, when to give up
// revoking) is a pure function in internal/policy; this package gathers the facts and acts.
package controllers

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/seal"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/wake"
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
		Backoff:             policy.Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute, MaxTransient: 30 * time.Second},
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
	// Seal signs what the operator writes into its Secrets and recognises it when read back
	// (trust.go); tenants can edit those Secrets, so nothing unsealed is believed.
	Seal *seal.Keys
	Config

	// unsaved holds refresh chains Keycloak rotated but the API server would not store (it was
	// down): types.NamespacedName → unsavedChain. The next reconcile saves them first.
	unsaved sync.Map
	// written: the Secret versions this process wrote last (see ownwrites.go).
	written ownWrites
	// saTokens: service-account tokens that authenticate clients (see satoken.go).
	saTokens saTokens
	// credentialChanges: when this process last saw each watched issuer credential change
	// (types.NamespacedName → time.Time); a failure older than a change is not waited out.
	credentialChanges sync.Map
	credentialNotes   atomic.Int64

	// MLflow checks whether MLflow accepts new tokens (nil: no checks, no MLflowAccepted).
	MLflow MLflowChecker

	// wake brings resources back from background workers (Notify).
	wake     *wake.Source
	wakeOnce sync.Once

	// Delivery: nudges of consumer pods and the DeliveryAtRisk check (nudge.go).
	Delivery Delivery

	// behind: resources whose last status write was refused as a conflict (types.NamespacedName
	// → struct{}). The cache may have missed an update of the resource: its next reconcile reads
	// it from the API server (see readResource).
	behind sync.Map
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
// The metrics endpoint authenticates and authorizes its callers through the API server.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Reconcile is get → ensure finalizer → delete or normal path → one status write.
func (r *MLflowAccessTokenReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj, err := r.readResource(ctx, req.NamespacedName)
	if err != nil {
		if apierrors.IsNotFound(err) {
			// Gone, perhaps without its finalizer having run (removed by hand, a forced delete):
			// what this process keeps about it goes too.
			r.forget(req.NamespacedName)
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
		gone bool
	)
	if !obj.DeletionTimestamp.IsZero() {
		res, gone, err = r.reconcileDelete(ctx, obj)
	} else {
		res, err = r.reconcileNormal(ctx, obj)
		r.reportMLflow(ctx, obj)
		r.reportDelivery(ctx, obj) // consumer pods (nudge.go)
	}
	if gone {
		r.forget(req.NamespacedName)
		return res, err
	}
	res, err = r.writeStatus(ctx, before, obj, res, err)
	if res.Priority == nil {
		res.Priority = queuePriority(obj, r.now())
	}
	metrics.Observe(obj)
	return res, err
}

// readResource reads the resource from the cache, or from the API server when its last status
// write was refused as a conflict. Usually the conflict was a race that the cache has caught up
// with by then; but a cache can miss an update for good (seen after an API server restart: one
// resource in 60 kept a status 8 rotations old while its Secret rotated on, as every status
// write based on the cached version was refused). Reading it afresh then lets the next status write succeed, and the
// watch event of that write brings the cache up to date.
func (r *MLflowAccessTokenReconciler) readResource(ctx context.Context, key types.NamespacedName) (*authv1alpha1.MLflowAccessToken, error) {
	obj := &authv1alpha1.MLflowAccessToken{}
	if _, ok := r.behind.LoadAndDelete(key); !ok || r.APIReader == nil {
		return obj, r.Get(ctx, key, obj)
	}
	if err := r.APIReader.Get(ctx, key, obj); err != nil {
		return obj, err
	}
	cached := &authv1alpha1.MLflowAccessToken{}
	if err := r.Get(ctx, key, cached); err == nil && cached.ResourceVersion != obj.ResourceVersion {
		log.FromContext(ctx).Info("The cache is behind the API server for this resource; using the API server's version",
			"cachedResourceVersion", cached.ResourceVersion, "resourceVersion", obj.ResourceVersion)
	}
	return obj, nil
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
		r.behind.Store(client.ObjectKeyFromObject(obj), struct{}{})
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, err
	default:
		return ctrl.Result{}, errors.Join(err, perr)
	}
}

func (r *MLflowAccessTokenReconciler) now() time.Time { return r.Clock.Now() }

// forget drops everything this process keeps about a resource that stopped existing, on every
// path where it does (its deletion finished, or it is found gone): its metric series (an alert
// must not fire for an object that no longer exists), the MLflow checker's and the nudger's
// memory, a refresh chain kept in memory, the stale-cache mark.
func (r *MLflowAccessTokenReconciler) forget(key types.NamespacedName) {
	metrics.Forget(key.Namespace, key.Name)
	r.forgetMLflow(key)
	r.forgetDelivery(key)
	r.unsaved.Delete(key)
	r.behind.Delete(key)
}
