package controllers

import (
	"context"
	"errors"
	"slices"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/wake"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// What brings a resource back to a reconcile: its own spec and metadata changes, its Secrets,
// its issuer's readiness, the issuer's credentials, the MLflow acceptance check.

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
// spec changes, brings its tokens back at once. Background workers bring a resource back through
// Notify (one source, internal/wake): the MLflow check's answer, the end of a rotation's nudges,
// a change of a credential an issuer references (CredentialChanged). Consumer pods that come or go
// update DeliveryAtRisk (nudge.go).
func (r *MLflowAccessTokenReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Seal == nil {
		return errors.New("the reconciler needs the keys that seal its Secrets (Seal)")
	}
	indexer := mgr.GetFieldIndexer()
	for _, ix := range []struct {
		obj   client.Object
		field string
		fn    client.IndexerFunc
	}{
		{&authv1alpha1.MLflowAccessToken{}, IndexIssuerRef, indexIssuerRef},
		{&authv1alpha1.MLflowAccessToken{}, IndexSessionID, indexSessionID},
		{&authv1alpha1.MLflowAccessToken{}, IndexSecretName, indexSecretName},
		{&corev1.Secret{}, IndexSecretController, indexSecretController},
	} {
		if err := indexer.IndexField(context.Background(), ix.obj, ix.field, ix.fn); err != nil {
			return err
		}
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&authv1alpha1.MLflowAccessToken{}, builder.WithPredicates(specOrMetadataChanged{})).
		Owns(&corev1.Secret{}, builder.WithPredicates(sealedOrOwned{r}, notOwnWrite{&r.written})).
		Watches(&authv1alpha1.KeycloakIssuer{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.tokensOf(ctx, authv1alpha1.KindKeycloakIssuer, client.ObjectKeyFromObject(o))
		}), builder.WithPredicates(issuerReadinessChanged{})).
		Watches(&authv1alpha1.ClusterKeycloakIssuer{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.tokensOf(ctx, authv1alpha1.KindClusterKeycloakIssuer, client.ObjectKeyFromObject(o))
		}), builder.WithPredicates(issuerReadinessChanged{})).
		WatchesRawSource(r.wakeSource()).
		WithOptions(opts).
		Named("mlflowaccesstoken")
	b = r.watchConsumers(b) // nudge.go
	return b.Complete(r)
}

// wakeSource is the one source through which background workers bring a resource back.
func (r *MLflowAccessTokenReconciler) wakeSource() *wake.Source {
	r.wakeOnce.Do(func() { r.wake = wake.New("mlflowaccesstoken", nil) })
	return r.wake
}

// Notify brings the resource key back to a reconcile, at once and without blocking. The MLflow
// checker and the nudger call it when their work for the resource is done.
func (r *MLflowAccessTokenReconciler) Notify(key types.NamespacedName) { r.wakeSource().Notify(key) }

// CredentialChanged is called when a Secret or ConfigMap an issuer references changed: the tokens
// of those issuers are reconciled, and a failure older than the change is not waited out.
func (r *MLflowAccessTokenReconciler) CredentialChanged(ctx context.Context, key types.NamespacedName) {
	r.noteCredentialChange(key)
	ns, cluster := issuersUsing(ctx, r.Client, r.ClusterResourceNamespace, key)
	for _, req := range append(r.tokensOf(ctx, authv1alpha1.KindKeycloakIssuer, ns...), r.tokensOf(ctx, authv1alpha1.KindClusterKeycloakIssuer, cluster...)...) {
		r.Notify(req.NamespacedName)
	}
}

// tokensOf lists the resources of the given issuers (from the cache, by index).
func (r *MLflowAccessTokenReconciler) tokensOf(ctx context.Context, kind string, keys ...types.NamespacedName) []reconcile.Request {
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

// IndexSecretName indexes MLflowAccessTokens by the name of their consumer Secret, so that a
// consumer pod finds the resources whose Secret it mounts.
const IndexSecretName = "spec.secretName"

func indexSecretName(o client.Object) []string {
	if t, ok := o.(*authv1alpha1.MLflowAccessToken); ok {
		return []string{t.SecretNameOrDefault()}
	}
	return nil
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
