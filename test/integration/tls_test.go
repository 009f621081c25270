package integration

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// Keycloak over HTTPS with a CA the test generated: the operator verifies the certificate by
// default (the system roots do not know the test CA), a wrong CA gives a clear condition, and the
// right CA, inline or from a ConfigMap, works.
func TestKeycloakOverTLS(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	https := func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.URL = kcServer.HTTPSURL() }

	create(t, newToken(ns, "noca", https))
	obj := waitReason(t, ns, "noca", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonKeycloakTLSError, 30*time.Second)
	if msg := condMessage(t, obj, authv1alpha1.ConditionReady); !strings.Contains(msg, "caBundle") {
		t.Errorf("message does not say how to fix it: %q", msg)
	}

	create(t, newToken(ns, "wrongca", https, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.CABundle = string(pki.OtherCAPEM) }))
	waitReason(t, ns, "wrongca", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonKeycloakTLSError, 30*time.Second)

	create(t, newToken(ns, "inlineca", https, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.CABundle = string(pki.CAPEM) }))
	obj = waitReady(t, ns, "inlineca", 30*time.Second)
	if obj.Status.Token == nil || obj.Status.Token.Issuer != kcServer.HTTPSURL()+"/realms/"+realm {
		t.Errorf("issuer = %+v, want the HTTPS URL", obj.Status.Token)
	}

	create(t, newToken(ns, "cmca", https, func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Keycloak.CAConfigMapRef = &authv1alpha1.ConfigMapKeyRef{Name: "keycloak-ca"}
	}))
	waitReason(t, ns, "cmca", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonCABundleNotFound, 30*time.Second)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "keycloak-ca", Namespace: ns}, Data: map[string]string{"ca.crt": string(pki.CAPEM)}})
	waitReady(t, ns, "cmca", 30*time.Second)

	for _, n := range []string{"noca", "wrongca", "inlineca", "cmca"} {
		deleteAndWait(t, get(t, ns, n), 30*time.Second)
	}
}
