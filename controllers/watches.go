package controllers

import (
	"context"
	"errors"
	"slices"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"

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
	"sigs.k8s.io/controller-runtime/pkg/source"
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
// spec changes, and a change of a credential an issuer references (credentialEvents, from the
// Watched store), bring its tokens back at once: a token waiting for its issuer, or failing with a
// client secret that was just rotated, recovers within seconds.
func (r *MLflowAccessTokenReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options, credentialEvents <-chan event.GenericEvent) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Seal == nil {
		return errors.New("the reconciler needs the keys that seal its Secrets (Seal)")
	}
	indexer := mgr.GetFieldIndexer()
	if err := indexer.IndexField(context.Background(), &authv1alpha1.MLflowAccessToken{}, IndexIssuerRef, indexIssuerRef); err != nil {
		return err
	}
	if err := indexer.IndexField(context.Background(), &authv1alpha1.MLflowAccessToken{}, IndexSessionID, indexSessionID); err != nil {
		return err
	}
	if err := indexer.IndexField(context.Background(), &corev1.Secret{}, IndexSecretController, indexSecretController); err != nil {
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
		Owns(&corev1.Secret{}, builder.WithPredicates(sealedOrOwned{r}, notOwnWrite{&r.written})).
		Watches(&authv1alpha1.KeycloakIssuer{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return tokensOf(ctx, authv1alpha1.KindKeycloakIssuer, client.ObjectKeyFromObject(o))
		}), builder.WithPredicates(issuerReadinessChanged{})).
		Watches(&authv1alpha1.ClusterKeycloakIssuer{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return tokensOf(ctx, authv1alpha1.KindClusterKeycloakIssuer, client.ObjectKeyFromObject(o))
		}), builder.WithPredicates(issuerReadinessChanged{})).
		WithOptions(opts).
		Named("mlflowaccesstoken")
	b = r.watchDeliveries(b) // finished nudges update status.consumers (nudge.go)
	// A result of the MLflow acceptance check reconciles its resource.
	if r.MLflow != nil {
		b = b.WatchesRawSource(source.Channel(r.mlflowResults.channel(), &handler.EnqueueRequestForObject{}))
	}
	if credentialEvents != nil {
		b = b.WatchesRawSource(source.Channel(credentialEvents, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			r.noteCredentialChange(client.ObjectKeyFromObject(o))
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
