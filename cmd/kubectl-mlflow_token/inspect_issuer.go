package main

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// reportCondition is a condition without its bookkeeping.
type reportCondition struct {
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// describeIssuer fills in the issuer's URL, realm and Ready condition, or why they are unknown.
func describeIssuer(ctx context.Context, c client.Reader, obj *authv1alpha1.MLflowAccessToken, k *reportKeycloak) {
	ref := obj.Spec.IssuerRef
	if ref == nil {
		return
	}
	var spec authv1alpha1.KeycloakIssuerSpec
	var status authv1alpha1.KeycloakIssuerStatus
	var err error
	kind := firstNonEmpty(ref.Kind, authv1alpha1.KindKeycloakIssuer)
	if kind == authv1alpha1.KindClusterKeycloakIssuer {
		iss := &authv1alpha1.ClusterKeycloakIssuer{}
		err = c.Get(ctx, client.ObjectKey{Name: ref.Name}, iss)
		spec, status = iss.Spec.KeycloakIssuerSpec, iss.Status
	} else {
		iss := &authv1alpha1.KeycloakIssuer{}
		err = c.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: ref.Name}, iss)
		spec, status = iss.Spec, iss.Status
	}
	switch {
	case apierrors.IsNotFound(err):
		k.IssuerError = fmt.Sprintf("%s %s does not exist", kind, ref.Name)
		return
	case apierrors.IsForbidden(err):
		k.IssuerError = fmt.Sprintf("you may not read %s %s", kind, ref.Name)
		return
	case err != nil:
		k.IssuerError = fmt.Sprintf("cannot read %s %s: %v", kind, ref.Name, err)
		return
	}
	k.URL, k.Realm = spec.URL, spec.Realm
	k.ClientID = firstNonEmpty(k.ClientID, spec.ClientAuth.ClientID)
	k.IssuerReady = &reportCondition{Status: "Unknown", Reason: "NotYetReconciled", Message: "the operator has not reported on it yet"}
	if cnd := meta.FindStatusCondition(status.Conditions, authv1alpha1.ConditionReady); cnd != nil {
		k.IssuerReady = &reportCondition{Status: string(cnd.Status), Reason: cnd.Reason, Message: cnd.Message}
	}
}
