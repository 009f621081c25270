package tokensecret

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

func owner() *authv1alpha1.MLflowAccessToken {
	return &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{
			Name: "t", Namespace: "ns",
			Labels:      map[string]string{"argocd.argoproj.io/instance": "team-a", "app": "x"},
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"},
		},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			SecretTemplate: &authv1alpha1.SecretTemplate{Labels: map[string]authv1alpha1.LabelValue{"team": "a"}, Annotations: map[string]string{"note": "n"}},
			MLflow:         &authv1alpha1.MLflowSpec{TrackingURI: "https://mlflow.example.com"},
		},
	}
}

var renewAt = time.Date(2026, 11, 28, 12, 3, 10, 0, time.UTC)

var st = State{
	AccessToken: "aaa.bbb.ccc",
	IssuedAt:    time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC),
	ExpiresAt:   time.Date(2026, 11, 28, 12, 5, 0, 0, time.UTC),
	IssuedFor:   "abc123",
}

func TestApplyAndRead(t *testing.T) {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"kept": "yes"}}}
	if !Apply(s, owner(), st, renewAt, "https://mlflow.example.com") {
		t.Fatal("Apply on an empty Secret reported no change")
	}
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("type = %q", s.Type)
	}
	for k, want := range map[string]string{
		KeyToken: "aaa.bbb.ccc", KeyTrackingToken: "aaa.bbb.ccc",
		KeyTrackingURI: "https://mlflow.example.com", KeyExpiresAt: "2026-11-28T12:05:00Z",
	} {
		if got := string(s.Data[k]); got != want {
			t.Errorf("data[%s] = %q, want %q", k, got, want)
		}
	}
	if s.Labels[LabelManagedBy] != ManagedByValue || s.Labels["team"] != "a" || s.Labels["kept"] != "yes" {
		t.Errorf("labels = %v", s.Labels)
	}
	if _, ok := s.Labels["argocd.argoproj.io/instance"]; ok {
		t.Error("the resource's own labels were copied onto the Secret")
	}
	if _, ok := s.Annotations["kubectl.kubernetes.io/last-applied-configuration"]; ok {
		t.Error("the resource's own annotations were copied onto the Secret")
	}
	if s.Annotations[AnnotationRenewAt] != "2026-11-28T12:03:10Z" {
		t.Errorf("renew-at not reported: %v", s.Annotations)
	}
	if s.Annotations["note"] != "n" {
		t.Errorf("template annotation missing: %v", s.Annotations)
	}

	got, ok := Read(s)
	if !ok || got != st {
		t.Fatalf("Read = %+v, %v; want %+v", got, ok, st)
	}
	if Apply(s, owner(), st, renewAt, "https://mlflow.example.com") {
		t.Error("a second Apply with the same state reported a change")
	}
}

func TestReadRejectsIncompleteOrEditedSecrets(t *testing.T) {
	base := &corev1.Secret{}
	Apply(base, owner(), st, renewAt, "")
	edits := map[string]func(s *corev1.Secret){
		"token edited by hand":   func(s *corev1.Secret) { s.Data[KeyToken] = []byte("other"); s.Data[KeyTrackingToken] = []byte("other") },
		"env copy differs":       func(s *corev1.Secret) { s.Data[KeyTrackingToken] = []byte("other") },
		"token blanked":          func(s *corev1.Secret) { s.Data[KeyToken] = nil },
		"expiry garbled":         func(s *corev1.Secret) { s.Data[KeyExpiresAt] = []byte("tomorrow") },
		"issued-at removed":      func(s *corev1.Secret) { delete(s.Annotations, AnnotationIssuedAt) },
		"issued-for removed":     func(s *corev1.Secret) { delete(s.Annotations, AnnotationIssuedFor) },
		"hash annotation edited": func(s *corev1.Secret) { s.Annotations[AnnotationTokenHash] = "00" },
	}
	for name, edit := range edits {
		s := base.DeepCopy()
		edit(s)
		if _, ok := Read(s); ok {
			t.Errorf("%s: Read accepted the Secret", name)
		}
	}
	if _, ok := Read(nil); ok {
		t.Error("Read(nil) accepted")
	}
}

func TestApplyWithoutTrackingURI(t *testing.T) {
	o := owner()
	o.Spec.MLflow = nil
	s := &corev1.Secret{Data: map[string][]byte{KeyTrackingURI: []byte("stale")}}
	Apply(s, o, st, renewAt, trackingOf(o))
	if _, ok := s.Data[KeyTrackingURI]; ok {
		t.Error("MLFLOW_TRACKING_URI kept after spec.mlflow was removed")
	}
}

func TestValidateTemplate(t *testing.T) {
	ok := []*authv1alpha1.SecretTemplate{nil, {}, {Labels: map[string]authv1alpha1.LabelValue{"team": "a", "example.com/app": "x-1.2_3"}, Annotations: map[string]string{"note": "any text, even long " + string(make([]byte, 300))}}}
	for _, tmpl := range ok {
		if err := ValidateTemplate(tmpl); err != nil {
			t.Errorf("valid template %v refused: %v", tmpl, err)
		}
	}
	bad := map[string]*authv1alpha1.SecretTemplate{
		"label key with a space":     {Labels: map[string]authv1alpha1.LabelValue{"bad key": "v"}},
		"label value of 70 chars":    {Labels: map[string]authv1alpha1.LabelValue{"k": "a234567890123456789012345678901234567890123456789012345678901234567890"}},
		"label value with a slash":   {Labels: map[string]authv1alpha1.LabelValue{"k": "a/b"}},
		"annotation key invalid":     {Annotations: map[string]string{"-x": "v"}},
		"reserved annotation prefix": {Annotations: map[string]string{AnnotationRenewAt: "v"}},
	}
	for name, tmpl := range bad {
		err := ValidateTemplate(tmpl)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), "spec.secretTemplate") {
			t.Errorf("%s: message %q does not name the field", name, err)
		}
	}
}

func trackingOf(o *authv1alpha1.MLflowAccessToken) string {
	if o.Spec.MLflow == nil {
		return ""
	}
	return o.Spec.MLflow.TrackingURI
}
