package scope

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name      string
		g         Guardrails
		url       string
		allowHTTP bool
		want      string // reason, "" for allowed
	}{
		{"https", Guardrails{}, "https://kc.example.com", false, ""},
		{"plain http refused", Guardrails{}, "http://kc.example.com", false, authv1alpha1.ReasonInsecureURL},
		{"plain http by the issuer", Guardrails{}, "http://kc.example.com", true, ""},
		{"plain http by the flag", Guardrails{AllowInsecureHTTP: true}, "http://kc.example.com", false, ""},
		{"credentials", Guardrails{}, "https://u:p@kc.example.com", false, authv1alpha1.ReasonURLNotAllowed},
		{"not a URL", Guardrails{}, "kc", false, authv1alpha1.ReasonURLNotAllowed},
		{"suffix", Guardrails{AllowedHosts: []string{".example.com"}}, "https://kc.example.com", false, ""},
		{"exact", Guardrails{AllowedHosts: []string{"kc.example.com."}}, "https://KC.example.com", false, ""},
		{"other host", Guardrails{AllowedHosts: []string{".example.com"}}, "https://kc.example.org", false, authv1alpha1.ReasonHostNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if r := tc.g.Check(tc.url, tc.allowHTTP, "ClusterKeycloakIssuer x"); r != nil {
				got = r.Reason
			}
			if got != tc.want {
				t.Errorf("Check(%s) = %q, want %q", tc.url, got, tc.want)
			}
		})
	}
}

func TestNamespaceSelector(t *testing.T) {
	s, r := NamespaceSelector(nil)
	if r != nil || !s.Empty() {
		t.Fatalf("nil selector: %v %v, want everything", s, r)
	}
	s, r = NamespaceSelector(&metav1.LabelSelector{MatchLabels: map[string]string{"mlflow": "on"}})
	if r != nil || s.Matches(labels.Set{"mlflow": "off"}) || !s.Matches(labels.Set{"mlflow": "on"}) {
		t.Fatalf("selector: %v %v", s, r)
	}
	if _, r = NamespaceSelector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "bad"}}}); r == nil || r.Reason != authv1alpha1.ReasonIssuerNotAllowed {
		t.Fatalf("invalid selector: %v", r)
	}
}

func TestReadyAndCA(t *testing.T) {
	if r := Ready(authv1alpha1.KeycloakIssuerStatus{}, "x"); r == nil || r.Reason != authv1alpha1.ReasonIssuerNotReady {
		t.Errorf("unchecked issuer: %v", r)
	}
	st := authv1alpha1.KeycloakIssuerStatus{Conditions: []metav1.Condition{{Type: authv1alpha1.ConditionReady, Status: metav1.ConditionTrue}}}
	if r := Ready(st, "x"); r != nil {
		t.Errorf("ready issuer refused: %v", r)
	}
	spec := authv1alpha1.KeycloakIssuerSpec{CA: &authv1alpha1.CASource{ConfigMapRef: &authv1alpha1.ConfigMapKeyRef{Name: "ca"}}}
	if src := IssuerCA(spec, "ops"); src == nil || src.Kind != KindConfigMap || src.Namespace != "ops" || src.Key != "ca.crt" {
		t.Errorf("IssuerCA = %+v", src)
	}
	if src := IssuerCA(authv1alpha1.KeycloakIssuerSpec{}, "ops"); src != nil {
		t.Errorf("no CA: %+v", src)
	}
	if r := CABundle([]byte("not pem"), "f"); r == nil || r.Reason != authv1alpha1.ReasonInvalidCABundle {
		t.Errorf("CABundle: %v", r)
	}
}
