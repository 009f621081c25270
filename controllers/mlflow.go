package controllers

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/mlflowcheck"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
)

// This file answers "does MLflow accept the token?" (condition MLflowAccepted). After a new
// token is written, checkMLflow submits a check to the MLflowChecker, which asks MLflow in the
// background; the Secret write never waits for it. When the result is in, the checker notifies
// the controller (Notify), the resource is reconciled, and
// reportMLflow turns the result into the condition, a Warning event per distinct rejection, and
// (through status) the mlflow_token_mlflow_accepted metric.

// MLflowChecker is what the reconciler needs of internal/mlflowcheck (tests fake it).
type MLflowChecker interface {
	// Submit queues a check; it never blocks.
	Submit(mlflowcheck.Request)
	// Lookup returns the last result for a resource (nil: none) and the token identity of a
	// check queued or running for it ("" when none).
	Lookup(types.NamespacedName) (last *mlflowcheck.Result, pendingTokenID string)
	// Forget drops what is known of a deleted resource.
	Forget(types.NamespacedName)
}

// trackingURI is the MLflow tracking URI the resource's token is for ("" when none is
// configured): its own, else its issuer's (t nil: not resolved). The one place that decides it.
func trackingURI(obj *authv1alpha1.MLflowAccessToken, t *target) string {
	if m := obj.Spec.MLflow; m != nil && m.TrackingURI != "" {
		return m.TrackingURI
	}
	if t != nil {
		return t.TrackingURI
	}
	return ""
}

// currentTrackingURI resolves the resource's tracking URI outside the normal path (its issuer
// from the cache; on failure only the resource's own), and whether the platform allows plain HTTP
// for the resource.
func (r *MLflowAccessTokenReconciler) currentTrackingURI(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (string, bool) {
	if obj.Spec.IssuerRef == nil {
		return trackingURI(obj, nil), false
	}
	t, _ := r.resolveTarget(ctx, obj)
	return trackingURI(obj, t), t != nil && t.allowHTTP
}

// tokenID identifies the token in the Secret as status records it: its jti, or its issue time
// for a token without one. Results carry it, never the token.
func tokenID(obj *authv1alpha1.MLflowAccessToken) string {
	if t := obj.Status.Token; t != nil && t.ID != "" {
		return "jti:" + t.ID
	}
	if obj.Status.IssuedAt != nil {
		return "iat:" + strconv.FormatInt(obj.Status.IssuedAt.Unix(), 10)
	}
	return ""
}

// checkMLflow asks, after a new token was written, whether MLflow accepts it (when a tracking
// URI is configured). It never delays the Secret write: the check runs asynchronously and the
// resource is reconciled again when its result is in.
//
// Every new token is checked except a routine scheduled renewal of a token MLflow accepted: a
// rotation does not change what MLflow checks (audience, issuer, user, groups come from the
// Keycloak client, which is unchanged), so asking again would only load MLflow. After a
// rejection or no answer, every rotation is checked, so a fix on MLflow's side is seen at the
// next rotation. The condition in status, not the checker's memory, decides, so a restart or a
// new leader does not check every resource again.
//
// uri is the tracking URI (trackingURI); ca is the CA bundle the resource gives for Keycloak,
// trusted for MLflow too, on top of the system's roots: a private PKI usually signs both.
func (r *MLflowAccessTokenReconciler) checkMLflow(obj *authv1alpha1.MLflowAccessToken, why policy.Why, accessToken, uri string, allowHTTP bool, ca []byte) {
	if uri == "" || r.MLflow == nil || accessToken == "" || r.Guardrails.CheckMLflow(uri, allowHTTP) != "" {
		return
	}
	if why == policy.Due {
		if c := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionMLflowAccepted); c != nil &&
			c.Status == metav1.ConditionTrue && c.ObservedGeneration == obj.Generation {
			return
		}
	}
	r.MLflow.Submit(mlflowcheck.Request{
		Key: client.ObjectKeyFromObject(obj), TrackingURI: uri, Token: accessToken, TokenID: tokenID(obj), CABundle: ca,
	})
}

// reportMLflow sets the MLflowAccepted condition from the last check of the current token.
func (r *MLflowAccessTokenReconciler) reportMLflow(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) {
	uri, allowHTTP := r.currentTrackingURI(ctx, obj)
	if uri == "" || r.MLflow == nil {
		meta.RemoveStatusCondition(&obj.Status.Conditions, authv1alpha1.ConditionMLflowAccepted)
		return
	}
	if msg := r.Guardrails.CheckMLflow(uri, allowHTTP); msg != "" {
		setMLflowCondition(obj, metav1.ConditionUnknown, authv1alpha1.ReasonMLflowCheckNotAllowed, msg)
		return
	}
	var prev *metav1.Condition
	if c := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionMLflowAccepted); c != nil {
		prev = c.DeepCopy()
	}
	last, pending := r.MLflow.Lookup(client.ObjectKeyFromObject(obj))
	id := tokenID(obj)
	if last != nil && last.TrackingURI != uri {
		last = nil // a check of another MLflow says nothing about this one
	}
	switch {
	case id == "":
		setMLflowCondition(obj, metav1.ConditionUnknown, authv1alpha1.ReasonMLflowPending,
			fmt.Sprintf("No token to show MLflow at %s yet", uri))
	case last != nil && last.TokenID == id:
		r.reportMLflowResult(obj, prev, last)
	case pending == id && prev != nil && prev.Status != metav1.ConditionUnknown && prev.ObservedGeneration == obj.Generation:
		// The new token is being checked: the last answer stands until the new one is in, so
		// that a token MLflow keeps rejecting reads False throughout, not False, Unknown, False
		// at every rotation (a transition, an event and two status writes each time).
	case pending == id:
		setMLflowCondition(obj, metav1.ConditionUnknown, authv1alpha1.ReasonMLflowPending,
			fmt.Sprintf("Asking MLflow at %s whether it accepts the token", uri))
	case last != nil && last.Outcome == mlflowcheck.Accepted:
		// A routine renewal after MLflow accepted the previous token: not asked again.
		r.reportMLflowResult(obj, prev, last)
	case prev != nil && prev.ObservedGeneration == obj.Generation:
		// Nothing in memory (a restart, a new leader): the condition in status still holds.
	default:
		setMLflowCondition(obj, metav1.ConditionUnknown, authv1alpha1.ReasonMLflowNotChecked, fmt.Sprintf(
			"MLflow at %s has not been asked about the current token; the next new token is checked (kubectl mlflow-token renew checks now)", uri))
	}
}

// forgetMLflow drops the checker's memory of a deleted resource.
func (r *MLflowAccessTokenReconciler) forgetMLflow(key types.NamespacedName) {
	if r.MLflow != nil {
		r.MLflow.Forget(key)
	}
}

// reportMLflowResult sets the condition from a result and tells people about changes: a Warning
// event for each distinct rejection (the same rejection at every rotation folds into one series,
// and is not repeated while the condition shows it), a Normal event when MLflow accepts a token
// after rejecting one.
func (r *MLflowAccessTokenReconciler) reportMLflowResult(obj *authv1alpha1.MLflowAccessToken, prev *metav1.Condition, res *mlflowcheck.Result) {
	switch res.Outcome {
	case mlflowcheck.Accepted:
		setMLflowCondition(obj, metav1.ConditionTrue, authv1alpha1.ReasonMLflowAccepted, res.Message)
		if prev != nil && prev.Status == metav1.ConditionFalse {
			r.event(obj, corev1.EventTypeNormal, authv1alpha1.ConditionMLflowAccepted, "CheckMLflow", "%s", res.Message)
		}
	case mlflowcheck.Rejected:
		msg := setMLflowCondition(obj, metav1.ConditionFalse, authv1alpha1.ReasonMLflowRejected, res.Message)
		if prev == nil || prev.Status != metav1.ConditionFalse || prev.Message != msg {
			r.event(obj, corev1.EventTypeWarning, authv1alpha1.ReasonMLflowRejectedEvent, "CheckMLflow", "%s", msg)
		}
	case mlflowcheck.Unexpected:
		setMLflowCondition(obj, metav1.ConditionUnknown, authv1alpha1.ReasonMLflowUnexpectedAnswer, res.Message)
	case mlflowcheck.Expired:
		setMLflowCondition(obj, metav1.ConditionUnknown, authv1alpha1.ReasonMLflowPending, res.Message)
	default:
		setMLflowCondition(obj, metav1.ConditionUnknown, authv1alpha1.ReasonMLflowUnreachable, res.Message)
	}
}

// setMLflowCondition sets MLflowAccepted and returns the message as stored (bounded).
func setMLflowCondition(obj *authv1alpha1.MLflowAccessToken, status metav1.ConditionStatus, reason, msg string) string {
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
		Type: authv1alpha1.ConditionMLflowAccepted, Status: status, Reason: reason, Message: msg, ObservedGeneration: obj.Generation,
	})
	return msg
}
