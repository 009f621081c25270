package tokensecret

import (
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
			SecretTemplate: &authv1alpha1.SecretTemplate{Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"note": "n"}},
			MLflow:         &authv1alpha1.MLflowSpec{TrackingURI: "https://mlflow.example.com"},
		},
	}
}

var st = State{
	AccessToken: "aaa.bbb.ccc",
	IssuedAt:    time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC),
	ExpiresAt:   time.Date(2026, 11, 28, 12, 5, 0, 0, time.UTC),
	RenewAt:     time.Date(2026, 11, 28, 12, 3, 10, 0, time.UTC),
	IssuedFor:   "abc123",
}

func TestApplyAndRead(t *testing.T) {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"kept": "yes"}}}
	if !Apply(s, owner(), st) {
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
	if s.Annotations["note"] != "n" {
		t.Errorf("template annotation missing: %v", s.Annotations)
	}

	got, ok := Read(s)
	if !ok || got != st {
		t.Fatalf("Read = %+v, %v; want %+v", got, ok, st)
	}
	if Apply(s, owner(), st) {
		t.Error("a second Apply with the same state reported a change")
	}
}

func TestReadRejectsIncompleteOrEditedSecrets(t *testing.T) {
	base := &corev1.Secret{}
	Apply(base, owner(), st)
	edits := map[string]func(s *corev1.Secret){
		"token edited by hand":   func(s *corev1.Secret) { s.Data[KeyToken] = []byte("other"); s.Data[KeyTrackingToken] = []byte("other") },
		"env copy differs":       func(s *corev1.Secret) { s.Data[KeyTrackingToken] = []byte("other") },
		"token blanked":          func(s *corev1.Secret) { s.Data[KeyToken] = nil },
		"expiry garbled":         func(s *corev1.Secret) { s.Data[KeyExpiresAt] = []byte("tomorrow") },
		"renew-at removed":       func(s *corev1.Secret) { delete(s.Annotations, AnnotationRenewAt) },
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
	Apply(s, o, st)
	if _, ok := s.Data[KeyTrackingURI]; ok {
		t.Error("MLFLOW_TRACKING_URI kept after spec.mlflow was removed")
	}
}
