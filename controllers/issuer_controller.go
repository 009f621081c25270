package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/wake"
)

// IssuerReconciler checks the issuers of one kind (KeycloakIssuer, or ClusterKeycloakIssuer
// when Cluster): its guardrails pass, its CA bundle and client secret are in place, and the
// realm answers OIDC discovery with the issuer its URL implies. Ready says so; tokens of an issuer
// that is not Ready say so in their own condition, and ask Keycloak nothing. It checks again when
// the issuer or one of its credentials changes, and every RecheckInterval.
type IssuerReconciler struct {
	client.Client
	APIReader client.Reader
	Recorder  events.EventRecorder
	Keycloak  keycloak.Client
	Watched   Watched
	Clock     clock.PassiveClock
	// Cluster: this reconciler serves ClusterKeycloakIssuers.
	Cluster bool
	// RecheckInterval is how often a Ready issuer is checked again (failing ones every
	// RecheckInterval/10, at least every 30 s).
	RecheckInterval time.Duration
	// NoClusterEvents: record no events about ClusterKeycloakIssuers. Events about cluster-scoped
	// objects go to the namespace "default", which an operator restricted to some namespaces
	// (--namespaces) may not write to; its issuers' conditions still say everything.
	NoClusterEvents bool
	Config

	wake *wake.Source
}

// eventf records an event about an issuer, unless NoClusterEvents rules it out.
func (r *IssuerReconciler) eventf(regarding runtime.Object, eventType, reason, note string, args ...any) {
	if r.Cluster && r.NoClusterEvents {
		return
	}
	r.Recorder.Eventf(regarding, nil, eventType, reason, "Check", note, args...)
}

// +kubebuilder:rbac:groups=auth.mlflow-token-operator.io,resources=keycloakissuers;clusterkeycloakissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.mlflow-token-operator.io,resources=keycloakissuers/status;clusterkeycloakissuers/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch

func (r *IssuerReconciler) kind() string {
	if r.Cluster {
		return authv1alpha1.KindClusterKeycloakIssuer
	}
	return authv1alpha1.KindKeycloakIssuer
}

// Reconcile checks one issuer and writes its status.
func (r *IssuerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var (
		obj       client.Object
		spec      *authv1alpha1.KeycloakIssuerSpec
		status    *authv1alpha1.KeycloakIssuerStatus
		credsNS   = req.Namespace
		allowHTTP = func() bool { return false }
	)
	if r.Cluster {
		o := &authv1alpha1.ClusterKeycloakIssuer{}
		obj, spec, status, credsNS = o, &o.Spec.KeycloakIssuerSpec, &o.Status, r.ClusterResourceNamespace
		allowHTTP = func() bool { return o.Spec.AllowInsecureHTTP }
	} else {
		o := &authv1alpha1.KeycloakIssuer{}
		obj, spec, status = o, &o.Spec, &o.Status
	}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			metrics.ForgetIssuer(r.kind(), req.Namespace, req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !obj.GetDeletionTimestamp().IsZero() {
		return ctrl.Result{}, nil
	}
	before := status.DeepCopy()
	desc := r.kind() + " " + req.Name
	now := r.Clock.Now()

	issuer, f := r.check(ctx, *spec, credsNS, allowHTTP(), desc)
	gen := obj.GetGeneration()
	set := func(typ string, st bool, reason, msg string) {
		s := metav1.ConditionFalse
		if st {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: truncateMsg(msg), ObservedGeneration: gen})
	}
	status.LastCheckTime = timePtr(now.Truncate(time.Second))
	status.ObservedGeneration = gen
	next := r.RecheckInterval
	if f == nil {
		status.Issuer = issuer
		set(authv1alpha1.ConditionReady, true, authv1alpha1.ReasonIssuerReady, fmt.Sprintf("Realm %s answered at %s; tokens carry the issuer %s", spec.Realm, spec.URL, issuer))
		meta.RemoveStatusCondition(&status.Conditions, authv1alpha1.ConditionStalled)
		meta.RemoveStatusCondition(&status.Conditions, authv1alpha1.ConditionReconciling)
	} else {
		if !f.classified() {
			return ctrl.Result{}, f
		}
		set(authv1alpha1.ConditionReady, false, f.Reason, f.Message)
		if stalledReasons[f.Reason] || issuerStalledReasons[f.Reason] {
			set(authv1alpha1.ConditionStalled, true, f.Reason, f.Message)
			meta.RemoveStatusCondition(&status.Conditions, authv1alpha1.ConditionReconciling)
		} else {
			set(authv1alpha1.ConditionReconciling, true, f.Reason, "Checking again: "+f.Message)
			meta.RemoveStatusCondition(&status.Conditions, authv1alpha1.ConditionStalled)
		}
		next = max(r.RecheckInterval/10, 30*time.Second)
	}
	wasReady := meta.IsStatusConditionTrue(before.Conditions, authv1alpha1.ConditionReady)
	nowReady := f == nil
	switch {
	case nowReady && !wasReady:
		r.eventf(obj, corev1.EventTypeNormal, authv1alpha1.ReasonIssuerReady, "Realm %s answered; issuer %s", spec.Realm, issuer)
	case !nowReady:
		// The same failure repeats as one series (the reference carries no resourceVersion).
		r.eventf(issuerRef(obj, r.kind()), corev1.EventTypeWarning, f.Reason, "%s", f.Message)
	}
	metrics.IssuerReady(r.kind(), req.Namespace, req.Name, nowReady)

	if !equality.Semantic.DeepEqual(before, status) {
		beforeObj := obj.DeepCopyObject().(client.Object)
		setStatus(beforeObj, before)
		if err := r.Status().Patch(ctx, obj, client.MergeFrom(beforeObj)); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	if f != nil {
		log.FromContext(ctx).Info("Issuer not ready", "reason", f.Reason, "message", f.Message)
	}
	// Jitter keeps many issuers created together from checking together.
	return ctrl.Result{RequeueAfter: next - time.Duration(policy.Jitter(string(obj.GetUID()), now.String())*float64(next)/10)}, nil
}

// issuerStalledReasons are issuer failures only a change can fix, besides the tokens' ones.
var issuerStalledReasons = map[string]bool{
	authv1alpha1.ReasonInsecureURL:      true,
	authv1alpha1.ReasonHostNotAllowed:   true,
	authv1alpha1.ReasonURLNotAllowed:    true,
	authv1alpha1.ReasonIssuerMismatch:   true,
	authv1alpha1.ReasonCABundleNotFound: true,
}

// check runs the issuer's checks and returns the realm's issuer.
func (r *IssuerReconciler) check(ctx context.Context, spec authv1alpha1.KeycloakIssuerSpec, credsNS string, allowHTTP bool, desc string) (string, *failure) {
	if f := checkURL(r.Guardrails, spec.URL, allowHTTP, desc); f != nil {
		return "", f
	}
	ep := keycloak.Endpoint{URL: spec.URL, Realm: spec.Realm}
	ca, f := readCABundle(ctx, r.APIReader, r.Watched, issuerCA(spec, credsNS, desc), true)
	if f != nil {
		return "", f
	}
	ep.CABundle = ca
	if ref := issuerSecret(spec, credsNS, desc); ref != nil {
		s, f := readUserSecret(ctx, r.APIReader, r.Watched, ref.NamespacedName, true, authv1alpha1.ReasonClientSecretNotFound, ref.field)
		if f != nil {
			return "", f
		}
		if _, f := secretKey(s, ref.Key, authv1alpha1.ReasonClientSecretNotFound, ref.field); f != nil {
			return "", f
		}
	}
	kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
	defer cancel()
	issuer, err := r.Keycloak.Discover(kctx, ep)
	if err != nil {
		return "", keycloakFailure(err, "")
	}
	if want := ep.IssuerURL(); issuer != want {
		return issuer, &failure{Reason: authv1alpha1.ReasonIssuerMismatch, Message: fmt.Sprintf(
			"the realm states the issuer %s, not %s: Keycloak's hostname setting or a proxy rewrites it, and tokens would carry %s; use the URL that gives that issuer (and the same in MLflow's OIDC settings)", issuer, want, issuer)}
	}
	return issuer, nil
}

func setStatus(o client.Object, s *authv1alpha1.KeycloakIssuerStatus) {
	switch v := o.(type) {
	case *authv1alpha1.KeycloakIssuer:
		v.Status = *s
	case *authv1alpha1.ClusterKeycloakIssuer:
		v.Status = *s
	}
}

// issuerRef is a reference to an issuer without resourceVersion, for events that repeat.
func issuerRef(o client.Object, kind string) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: authv1alpha1.GroupVersion.String(), Kind: kind, Namespace: o.GetNamespace(), Name: o.GetName(), UID: o.GetUID()}
}

func truncateMsg(msg string) string {
	if len(msg) > 1024 {
		return msg[:1024]
	}
	return msg
}

// SetupWithManager registers the controller. Only spec changes trigger a check (its own status
// writes do not); a change of a credential it references comes through CredentialChanged.
func (r *IssuerReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.RecheckInterval <= 0 {
		r.RecheckInterval = 5 * time.Minute
	}
	var obj client.Object = &authv1alpha1.KeycloakIssuer{}
	name := "keycloakissuer"
	if r.Cluster {
		obj, name = &authv1alpha1.ClusterKeycloakIssuer{}, "clusterkeycloakissuer"
	}
	r.wake = wake.New(name, nil)
	return ctrl.NewControllerManagedBy(mgr).
		For(obj, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(r.wake).
		WithOptions(opts).
		Named(name).
		Complete(r)
}

// CredentialChanged is called when a Secret or ConfigMap changed: the issuers of this kind that
// reference it are checked again.
func (r *IssuerReconciler) CredentialChanged(ctx context.Context, key types.NamespacedName) {
	if r.wake == nil {
		return // not set up
	}
	ns, cluster := issuersUsing(ctx, r.Client, r.ClusterResourceNamespace, key)
	keys := ns
	if r.Cluster {
		keys = cluster
	}
	for _, k := range keys {
		r.wake.Notify(k)
	}
}

// issuersUsing returns the issuers that reference the Secret or ConfigMap key (for a CA bundle or
// a client secret): namespaced ones, and cluster ones (by name).
func issuersUsing(ctx context.Context, c client.Reader, clusterNS string, key types.NamespacedName) (namespaced, cluster []types.NamespacedName) {
	uses := func(spec authv1alpha1.KeycloakIssuerSpec, ns string) bool {
		if s := issuerSecret(spec, ns, ""); s != nil && s.NamespacedName == key {
			return true
		}
		ca := issuerCA(spec, ns, "")
		return (ca.configMap != nil && ca.configMap.NamespacedName == key) || (ca.secret != nil && ca.secret.NamespacedName == key)
	}
	var nl authv1alpha1.KeycloakIssuerList
	if err := c.List(ctx, &nl, client.InNamespace(key.Namespace)); err == nil {
		for _, i := range nl.Items {
			if uses(i.Spec, i.Namespace) {
				namespaced = append(namespaced, types.NamespacedName{Namespace: i.Namespace, Name: i.Name})
			}
		}
	}
	if key.Namespace == clusterNS {
		var cl authv1alpha1.ClusterKeycloakIssuerList
		if err := c.List(ctx, &cl); err == nil {
			for _, i := range cl.Items {
				if uses(i.Spec.KeycloakIssuerSpec, clusterNS) {
					cluster = append(cluster, types.NamespacedName{Name: i.Name})
				}
			}
		}
	}
	return namespaced, cluster
}
