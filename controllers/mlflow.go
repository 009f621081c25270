package controllers

import (
	"context"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
)

// checkMLflow asks, after a new token was written, whether MLflow accepts it (when a tracking
// URI is configured). It never delays the Secret write: the check runs asynchronously and the
// resource is reconciled again when its result is in. Not implemented yet: see issue 11, part 5.
func (r *MLflowAccessTokenReconciler) checkMLflow(_ context.Context, _ *authv1alpha1.MLflowAccessToken, _ policy.Why, _ string) {
}

// reportMLflow sets the MLflowAccepted condition from the last check of the current token.
func (r *MLflowAccessTokenReconciler) reportMLflow(_ *authv1alpha1.MLflowAccessToken) {}

// trackingURI is the MLflow tracking URI of obj's tokens: its own, else its issuer's.
func trackingURI(obj *authv1alpha1.MLflowAccessToken, t *target) string {
	if m := obj.Spec.MLflow; m != nil && m.TrackingURI != "" {
		return m.TrackingURI
	}
	if t != nil {
		return t.TrackingURI
	}
	return ""
}
