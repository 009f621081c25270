package integration

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// validSpec returns a spec the API server accepts; each case below breaks one thing.
func validSpec() map[string]any {
	return map[string]any{
		"keycloak": map[string]any{
			"url": "https://keycloak.example.com", "realm": "mlflow", "clientID": "mlflow-operator",
			"clientSecretRef": map[string]any{"name": "kc-client", "key": "client-secret"},
		},
		"grant": map[string]any{"type": "ClientCredentials"},
	}
}

func set(path string, v any) func(map[string]any) {
	return func(spec map[string]any) {
		parts := strings.Split(path, ".")
		m := spec
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		if v == nil {
			delete(m, parts[len(parts)-1])
		} else {
			m[parts[len(parts)-1]] = v
		}
	}
}

// Bad resources are rejected by the API server itself (OpenAPI schema + CEL), with a message
// a person understands. kubectl applies with strict field validation, so unknown fields such
// as a namespace on the Secret reference are rejected too.
func TestAdmissionRejectsBadResources(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	cases := []struct {
		name    string
		mutate  func(map[string]any)
		wantMsg string
	}{
		{"ftp URL", set("keycloak.url", "ftp://keycloak.example.com"), "url must be an absolute http:// or https:// URL"},
		{"URL without scheme", set("keycloak.url", "keycloak.example.com"), "url must be an absolute http:// or https:// URL"},
		{"URL with realm path", set("keycloak.url", "https://kc.example.com/realms/mlflow"), "without the /realms/<realm> path"},
		{"URL with query", set("keycloak.url", "https://kc.example.com/?x=1"), "must not carry a query"},
		{"empty URL", set("keycloak.url", ""), "spec.keycloak.url"},
		{"missing realm", set("keycloak.realm", nil), "spec.keycloak.realm: Required value"},
		{"realm with slash", set("keycloak.realm", "a/b"), "spec.keycloak.realm"},
		{"missing clientID", set("keycloak.clientID", nil), "spec.keycloak.clientID: Required value"},
		{"missing secret name", set("keycloak.clientSecretRef.name", nil), "spec.keycloak.clientSecretRef.name: Required value"},
		{"cross-namespace secret ref", set("keycloak.clientSecretRef.namespace", "other"), `unknown field "spec.keycloak.clientSecretRef.namespace"`},
		{"unknown grant", set("grant.type", "Implicit"), `supported values: "ClientCredentials"`},
		{"missing grant", set("grant", nil), "spec.grant: Required value"},
		{"scope with a space", set("grant.scopes", []any{"openid profile"}), "spec.grant.scopes[0]"},
		{"duplicate scopes", set("grant.scopes", []any{"openid", "openid"}), "Duplicate value"},
		{"negative renewBefore", set("renewBefore", "-5m"), "spec.renewBefore"},
		{"zero renewBefore", set("renewBefore", "0s"), "renewBefore must be a positive duration"},
		{"word as renewBefore", set("renewBefore", "soon"), "spec.renewBefore"},
		{"absurd renewBefore", set("renewBefore", "100000h"), "must not exceed 8760h"},
		{"bad secretName", set("secretName", "Bad_Name"), "spec.secretName"},
		{"tracking URI not a URL", set("mlflow.trackingURI", "mlflow:5000"), "trackingURI must be an absolute http:// or https:// URL"},
		{"RefreshToken without its Secret", set("grant.type", "RefreshToken"), "refreshTokenSecretRef is required for type RefreshToken"},
		{"Password without its Secret", set("grant.type", "Password"), "passwordSecretRef is required for type Password"},
		{"password Secret on client credentials", set("grant.passwordSecretRef", map[string]any{"name": "creds"}), "passwordSecretRef is required for type Password and not allowed"},
		{"offline on client credentials", set("grant.offline", true), "offline is only meaningful for type Password"},
		{"cross-namespace password ref", func(m map[string]any) {
			set("grant.type", "Password")(m)
			set("grant.passwordSecretRef", map[string]any{"name": "creds", "namespace": "other"})(m)
		}, `unknown field "spec.grant.passwordSecretRef.namespace"`},
		{"secretName taking the state Secret's name", set("secretName", "x-refresh-state"), "reserved for the operator's state Secret"},
		{"oversized clientID", set("keycloak.clientID", strings.Repeat("c", 300)), "spec.keycloak.clientID: Too long"},
		{"renewBefore without a unit", set("renewBefore", "5"), `spec.renewBefore: Invalid value: "5": spec.renewBefore in body should match`},
		{"template label key with a space", set("secretTemplate.labels", map[string]any{"bad key": "v"}), "label keys must be [prefix/]name"},
		{"template label value of 70 characters", set("secretTemplate.labels", map[string]any{"team": strings.Repeat("a", 70)}), "spec.secretTemplate.labels.team: Too long: may not be more than 63"},
		{"template label value with a slash", set("secretTemplate.labels", map[string]any{"team": "a/b"}), "spec.secretTemplate.labels.team in body should match"},
		{"template annotation key invalid", set("secretTemplate.annotations", map[string]any{"-x": "v"}), "annotation keys must be [prefix/]name"},
		{"template annotation in the operator's prefix", set("secretTemplate.annotations", map[string]any{"auth.mlflow-token-operator.io/renew-at": "x"}), "reserved for the operator"},
		{"URL with a user and password", set("keycloak.url", "https://admin:pw@keycloak.example.com"), "must not carry a user name or password"},
		{"URL with a fragment", set("keycloak.url", "https://kc.example.com/#x"), "must not carry a query or fragment"},
		{"tracking URI with a user and password", set("mlflow.trackingURI", "https://u:p@mlflow.example.com"), "trackingURI must not carry a user name or password"},
		{"tracking URI with a query", set("mlflow.trackingURI", "https://mlflow.example.com/?token=x"), "trackingURI must not carry a query or fragment"},
		{"both an issuer and an inline Keycloak", set("issuerRef", map[string]any{"name": "platform"}), "set exactly one of issuerRef"},
		{"neither an issuer nor a Keycloak", set("keycloak", nil), "set exactly one of issuerRef"},
		{"clientID without an issuer", set("clientID", "x"), "clientID names the client at an issuer"},
		{"serviceAccountName without an issuer", set("serviceAccountName", "trainer"), "serviceAccountName goes with an issuer"},
		{"unknown issuer kind", func(m map[string]any) {
			set("keycloak", nil)(m)
			set("issuerRef", map[string]any{"kind": "Issuer", "name": "x"})(m)
		}, `supported values: "KeycloakIssuer", "ClusterKeycloakIssuer"`},
		{"inline with both a secret and a service account", set("keycloak.serviceAccountName", "trainer"), "set exactly one of clientSecretRef"},
		{"inline with neither a secret nor a service account", set("keycloak.clientSecretRef", nil), "set exactly one of clientSecretRef"},
		{"inline with the default service account", func(m map[string]any) {
			set("keycloak.clientSecretRef", nil)(m)
			set("keycloak.serviceAccountName", "default")(m)
		}, "the default ServiceAccount is shared by every pod"},
	}
	if len(cases) < 10 {
		t.Fatal("fewer than 10 kinds of mistake")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := validSpec()
			tc.mutate(spec)
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "auth.mlflow-token-operator.io/v1alpha1",
				"kind":       "MLflowAccessToken",
				"metadata":   map[string]any{"generateName": "bad-", "namespace": ns},
				"spec":       spec,
			}}
			err := k8s.Create(context.Background(), u, client.FieldValidation("Strict"), client.DryRunAll)
			if err == nil {
				t.Fatalf("accepted: %v", spec)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("message %q does not contain %q", err.Error(), tc.wantMsg)
			}
			// A person reads these: no CEL internals.
			for _, internal := range []string{"protobuf", "type conversion", "no such overload"} {
				if strings.Contains(err.Error(), internal) {
					t.Errorf("message %q shows CEL internals (%q)", err.Error(), internal)
				}
			}
		})
	}

	// And the valid one is accepted, with the key defaulted; a valid template too.
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "auth.mlflow-token-operator.io/v1alpha1", "kind": "MLflowAccessToken",
		"metadata": map[string]any{"name": "good", "namespace": ns},
		"spec":     validSpec(),
	}}
	set("keycloak.clientSecretRef.key", nil)(u.Object["spec"].(map[string]any))
	set("secretTemplate", map[string]any{"labels": map[string]any{"team": "a", "example.com/app": "x-1.2_3"},
		"annotations": map[string]any{"example.com/note": "any text / even with slashes"}})(u.Object["spec"].(map[string]any))
	if err := k8s.Create(context.Background(), u, client.FieldValidation("Strict"), client.DryRunAll); err != nil {
		t.Fatalf("valid resource rejected: %v", err)
	}
	key, _, _ := unstructured.NestedString(u.Object, "spec", "keycloak", "clientSecretRef", "key")
	if key != "client-secret" {
		t.Errorf("clientSecretRef.key defaulted to %q", key)
	}
}

// Issuers are checked at admission too.
func TestAdmissionRejectsBadIssuers(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	valid := func() map[string]any {
		return map[string]any{"url": "https://keycloak.example.com", "realm": "mlflow",
			"clientAuth": map[string]any{"clientID": "c", "clientSecretRef": map[string]any{"name": "s"}}}
	}
	cases := []struct {
		name    string
		kind    string
		mutate  func(map[string]any)
		wantMsg string
	}{
		{"URL with a user and password", "KeycloakIssuer", set("url", "https://u:p@kc.example.com"), "must not carry a user name or password"},
		{"URL with a query", "ClusterKeycloakIssuer", set("url", "https://kc.example.com/?a=b"), "must not carry a query or fragment"},
		{"URL with the realm path", "KeycloakIssuer", set("url", "https://kc.example.com/realms/x"), "without the /realms/<realm> path"},
		{"a secret and a service account", "KeycloakIssuer", set("clientAuth.serviceAccount", map[string]any{"name": "trainer"}), "set exactly one of clientSecretRef"},
		{"neither a secret nor a service account", "ClusterKeycloakIssuer", set("clientAuth.clientSecretRef", nil), "set exactly one of clientSecretRef"},
		{"a secret without its client", "KeycloakIssuer", set("clientAuth.clientID", nil), "clientID is required with clientSecretRef"},
		{"the default service account", "ClusterKeycloakIssuer", func(m map[string]any) {
			set("clientAuth.clientSecretRef", nil)(m)
			set("clientAuth.serviceAccount", map[string]any{"name": "default"})(m)
		}, "the default ServiceAccount is shared by every pod"},
		{"CA from a ConfigMap and a Secret", "KeycloakIssuer", set("ca", map[string]any{"configMapRef": map[string]any{"name": "a"}, "secretRef": map[string]any{"name": "b"}}), "set exactly one of configMapRef or secretRef"},
		{"allowInsecureHTTP on a namespaced issuer", "KeycloakIssuer", set("allowInsecureHTTP", true), `unknown field "spec.allowInsecureHTTP"`},
		{"namespaceSelector on a namespaced issuer", "KeycloakIssuer", set("namespaceSelector", map[string]any{}), `unknown field "spec.namespaceSelector"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := valid()
			tc.mutate(spec)
			meta := map[string]any{"generateName": "bad-"}
			if tc.kind == "KeycloakIssuer" {
				meta["namespace"] = ns
			}
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "auth.mlflow-token-operator.io/v1alpha1", "kind": tc.kind, "metadata": meta, "spec": spec}}
			err := k8s.Create(context.Background(), u, client.FieldValidation("Strict"), client.DryRunAll)
			if err == nil {
				t.Fatalf("accepted: %v", spec)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("message %q does not contain %q", err.Error(), tc.wantMsg)
			}
		})
	}
	for _, kind := range []string{"KeycloakIssuer", "ClusterKeycloakIssuer"} {
		meta := map[string]any{"generateName": "good-"}
		if kind == "KeycloakIssuer" {
			meta["namespace"] = ns
		}
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "auth.mlflow-token-operator.io/v1alpha1", "kind": kind, "metadata": meta, "spec": valid()}}
		if err := k8s.Create(context.Background(), u, client.FieldValidation("Strict"), client.DryRunAll); err != nil {
			t.Errorf("valid %s rejected: %v", kind, err)
		}
	}
}
