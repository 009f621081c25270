package controllers

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/nudge"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// This file is the delivery of new tokens to the pods that consume the Secret: the nudge after a
// rotation (internal/nudge does the work, asynchronously), status.consumers, and the
// DeliveryAtRisk condition. It reads pods only from the cache, which holds only pods labelled
// auth.mlflow-token-operator.io/consumer=true.

// The nudge patches one annotation on consumer pods.
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch;patch

// Delivery configures how new tokens reach consumer pods.
type Delivery struct {
	// Nudger nudges the labelled consumer pods after each rotation (nil: nudging is off).
	Nudger *nudge.Nudger
	// KubeletSyncFrequency of the cluster's nodes, for the DeliveryAtRisk check (zero: 1 minute,
	// the kubelet's default).
	KubeletSyncFrequency time.Duration
}

// forgetDelivery drops the Nudger's memory of a deleted resource.
func (r *MLflowAccessTokenReconciler) forgetDelivery(key types.NamespacedName) {
	if r.Delivery.Nudger != nil {
		r.Delivery.Nudger.Forget(key)
	}
}

// nudgeConsumers queues the nudges of the consumer pods after a new token was written to the
// Secret. It reads the cache only and returns at once: the nudges never delay the reconcile.
func (r *MLflowAccessTokenReconciler) nudgeConsumers(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, st tokensecret.State) {
	n := r.Delivery.Nudger
	if n == nil {
		return
	}
	secret := obj.SecretNameOrDefault()
	written := sha256.Sum256([]byte(st.AccessToken)) // compared in memory, never stored
	rep, err := n.Rotated(ctx, nudge.Rotation{
		Owner:  types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name},
		Secret: secret, TokenIssuedAt: st.IssuedAt, WrittenAt: r.now(),
		Shows: func(s *corev1.Secret) bool { return sha256.Sum256(s.Data[tokensecret.KeyToken]) == written },
	})
	if err != nil {
		log.FromContext(ctx).Info("Could not look up the consumer pods to nudge", "secret", secret, "error", err.Error())
		return
	}
	log.FromContext(ctx).V(1).Info("Nudging consumer pods", "secret", secret, "pods", rep.Pods, "notUpdatable", len(rep.NotUpdatable))
	if len(rep.NotUpdatable) > 0 {
		// At every rotation: the events library folds the repeats into one series (it keys series
		// by object, type, reason and action), so a rotating token does not flood the events.
		r.event(obj, corev1.EventTypeWarning, authv1alpha1.ReasonConsumersNotUpdatable, "Nudge",
			"%s read Secret %s only through environment variables or subPath mounts, which never change in a running container: they keep the token they started with. Mount the Secret as a directory",
			podList(rep.NotUpdatable), secret)
	}
}

// reportDelivery writes status.consumers (from this process's report of the current token's
// nudges) and the DeliveryAtRisk condition. It never changes Ready, Reconciling or Stalled.
func (r *MLflowAccessTokenReconciler) reportDelivery(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) {
	s := &obj.Status
	n := r.Delivery.Nudger
	if n == nil {
		s.Consumers = nil
	} else {
		secret := obj.SecretNameOrDefault()
		rep, ok := n.Report(types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name})
		if ok && s.IssuedAt != nil && rep.TokenIssuedAt.Unix() == s.IssuedAt.Unix() {
			prev := s.Consumers
			s.Consumers = consumersStatus(rep)
			if rep.Failed > 0 && (prev == nil || prev.TokenIssuedAt == nil || !prev.TokenIssuedAt.Equal(s.Consumers.TokenIssuedAt) || prev.Failed != s.Consumers.Failed) {
				r.event(obj, corev1.EventTypeWarning, authv1alpha1.ReasonNudgeFailed, "Nudge",
					"Could not nudge %d of %d consumer pods of Secret %s (first: %s); they receive the new token at their kubelet's next periodic sync",
					rep.Failed, rep.Pods, secret, rep.FirstFailure)
			}
		}
	}

	if s.IssuedAt == nil || s.ExpiresAt == nil {
		meta.RemoveStatusCondition(&s.Conditions, authv1alpha1.ConditionDeliveryAtRisk)
		return
	}
	d := r.delivery(ctx, obj)
	lifetime := s.ExpiresAt.Sub(s.IssuedAt.Time)
	c := policy.CheckDelivery(lifetime, renewBefore(obj), d)
	reason, msg := deliveryMessage(obj, lifetime, c, d, n != nil)
	prev := meta.FindStatusCondition(s.Conditions, authv1alpha1.ConditionDeliveryAtRisk)
	setCondition(obj, authv1alpha1.ConditionDeliveryAtRisk, c.AtRisk, reason, msg)
	if c.AtRisk && (prev == nil || prev.Status != metav1.ConditionTrue || prev.Reason != reason) {
		r.event(obj, corev1.EventTypeWarning, reason, "Schedule", "%s", msg)
	}
}

// deliveryMessage words the DeliveryAtRisk condition.
func deliveryMessage(obj *authv1alpha1.MLflowAccessToken, lifetime time.Duration, c policy.DeliveryCheck, d policy.Delivery, nudging bool) (reason, msg string) {
	secret := obj.SecretNameOrDefault()
	life, margin, kubelet := lifetime.Round(time.Second), c.Margin.Round(time.Second), d.KubeletDelay()
	unlabelled := fmt.Sprintf("pods without the label %s=true wait for their kubelet's periodic sync, up to %s", authv1alpha1.LabelConsumer, kubelet)
	switch {
	case !c.AtRisk && d.NudgedPods > 0:
		return authv1alpha1.ReasonMarginSufficient, fmt.Sprintf("Tokens are renewed at least %s before they expire; the %d nudged consumer pods of Secret %s need up to %s (%s)",
			margin, d.NudgedPods, secret, c.Need, unlabelled)
	case !c.AtRisk:
		return authv1alpha1.ReasonMarginSufficient, fmt.Sprintf("Tokens are renewed at least %s before they expire; pods that mount Secret %s receive a new token within %s (their kubelet's periodic sync)",
			margin, secret, c.Need)
	case d.NudgedPods > 0:
		return authv1alpha1.ReasonMarginBelowNudgeDelivery, fmt.Sprintf("Tokens live %s and are renewed %s before they expire, but the %d nudged consumer pods of Secret %s may need up to %s to receive a new one: they may read an expired token. Use tokens that live at least %s (the access token lifespan of the Keycloak client or realm)",
			life, margin, d.NudgedPods, secret, c.Need, c.MinLifetime)
	}
	fix := fmt.Sprintf("Label the consumer pods %s=true (on the pod template) so that the operator nudges them after each rotation (they then need about %s), or use tokens that live at least %s",
		authv1alpha1.LabelConsumer, policy.NudgedDelivery, c.MinLifetime)
	if !nudging {
		fix = fmt.Sprintf("Nudging consumer pods is off in this operator (--nudge-consumer-pods): use tokens that live at least %s", c.MinLifetime)
	}
	return authv1alpha1.ReasonMarginBelowKubeletSync, fmt.Sprintf("Tokens live %s and are renewed %s before they expire, but pods that mount Secret %s receive a new token only at their kubelet's periodic sync, up to %s later: they may read an expired token. %s (the access token lifespan of the Keycloak client or realm)",
		life, margin, secret, kubelet, fix)
}

func consumersStatus(rep nudge.Report) *authv1alpha1.ConsumersStatus {
	c := &authv1alpha1.ConsumersStatus{
		TokenIssuedAt: timePtr(rep.TokenIssuedAt.Truncate(time.Second)),
		Pods:          int32(rep.Pods), Nudged: int32(rep.Nudged), Failed: int32(rep.Failed),
		NotUpdatable: int32(len(rep.NotUpdatable)),
	}
	if !rep.LastNudge.IsZero() {
		// Whole seconds, as status stores it: else every reconcile would see a change.
		c.LastNudgeTime = timePtr(rep.LastNudge.Truncate(time.Second))
	}
	return c
}

// podList names up to five pods ("3 pods (a, b, c)").
func podList(pods []string) string {
	const most = 5
	names := pods
	more := ""
	if len(names) > most {
		names, more = names[:most], fmt.Sprintf(", and %d more", len(pods)-most)
	}
	noun := "pods"
	if len(pods) == 1 {
		noun = "pod"
	}
	return fmt.Sprintf("%d labelled %s (%s%s)", len(pods), noun, strings.Join(names, ", "), more)
}

// watchConsumers updates DeliveryAtRisk and status.consumers when consumer pods come or go: the
// cache holds only pods labelled as consumers, so a pod that gets or loses the label counts too.
// Updates are not watched (the nudge itself updates every consumer pod at every rotation).
func (r *MLflowAccessTokenReconciler) watchConsumers(b *builder.Builder) *builder.Builder {
	if r.Delivery.Nudger == nil {
		return b
	}
	return b.Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.tokensMountedBy),
		builder.WithPredicates(predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }}))
}

// tokensMountedBy maps a consumer pod to the resources whose Secret it reads.
func (r *MLflowAccessTokenReconciler) tokensMountedBy(ctx context.Context, o client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	for _, secret := range nudge.SecretsIndex(o) {
		var l authv1alpha1.MLflowAccessTokenList
		if err := r.List(ctx, &l, client.InNamespace(o.GetNamespace()), client.MatchingFields{IndexSecretName: secret}); err != nil {
			continue
		}
		for _, t := range l.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: t.Namespace, Name: t.Name}})
		}
	}
	return reqs
}
