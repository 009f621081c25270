package tokensecret

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/seal"
)

var keys = seal.MustKeys([]byte("tokensecret-test-key-0123456789"))

func sealedSecret() *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "train", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: authv1alpha1.GroupVersion.String(), Kind: "MLflowAccessToken", Name: "train", UID: "uid-1", Controller: new(true)}}}}
	Apply(s, owner(), st, renewAt, "https://mlflow.example.com")
	Seal(s, keys)
	return s
}

func TestSealCoversWhatTheOperatorWrites(t *testing.T) {
	if !Verify(sealedSecret(), keys) {
		t.Fatal("a freshly sealed Secret does not verify")
	}
	edits := map[string]func(*corev1.Secret){
		"expiry edited":           func(s *corev1.Secret) { s.Data[KeyExpiresAt] = []byte("2099-01-01T00:00:00Z") },
		"token replaced":          func(s *corev1.Secret) { s.Data[KeyToken] = []byte("other") },
		"data key added":          func(s *corev1.Secret) { s.Data["extra"] = []byte("x") },
		"operator annotation":     func(s *corev1.Secret) { s.Annotations[AnnotationIssuedAt] = "2020-01-01T00:00:00Z" },
		"operator annotation new": func(s *corev1.Secret) { s.Annotations[annotationPrefix+"keycloak-url"] = "https://evil" },
		"role label set":          func(s *corev1.Secret) { s.Labels[LabelRole] = RoleRefreshState },
		"renamed":                 func(s *corev1.Secret) { s.Name = "other" },
		"other namespace":         func(s *corev1.Secret) { s.Namespace = "team-b" },
		"other owner":             func(s *corev1.Secret) { s.OwnerReferences[0].UID = "uid-2" },
		"owner removed":           func(s *corev1.Secret) { s.OwnerReferences = nil },
		"seal removed":            func(s *corev1.Secret) { delete(s.Annotations, AnnotationSeal) },
		"type changed":            func(s *corev1.Secret) { s.Type = corev1.SecretTypeDockerConfigJson },
	}
	for name, edit := range edits {
		s := sealedSecret()
		edit(s)
		if Verify(s, keys) {
			t.Errorf("%s: still verifies", name)
		}
	}
	s := sealedSecret()
	s.Labels["team"] = "a"
	s.Annotations["argocd.argoproj.io/tracking-id"] = "x"
	s.Finalizers = nil
	if !Verify(s, keys) {
		t.Error("labels, annotations and finalizers others add break the seal")
	}
	if Verify(sealedSecret(), seal.MustKeys([]byte("another-key-another-key-another"))) {
		t.Error("another key verifies")
	}
}

func TestStubAndTransform(t *testing.T) {
	big := sealedSecret()
	big.Data[KeyExpiresAt] = []byte(time.Now().Format(time.RFC3339)) // breaks the seal
	big.Data["padding"] = make([]byte, 100<<10)
	big.Annotations["huge"] = string(make([]byte, 200<<10))
	big.Labels["extra"] = "x"
	big.Finalizers = append(big.Finalizers, "other/finalizer")
	big.OwnerReferences = append(big.OwnerReferences, metav1.OwnerReference{Kind: "X", Name: "y"})
	out, err := CacheTransform(keys)(big)
	if err != nil {
		t.Fatal(err)
	}
	stub := out.(*corev1.Secret)
	if !IsStub(stub) || len(stub.Data) != 0 || len(stub.Annotations) != 1 || len(stub.OwnerReferences) != 1 ||
		len(stub.Labels) != 1 || len(stub.Finalizers) != 1 || stub.Name != "train" {
		t.Fatalf("stub %+v", stub.ObjectMeta)
	}
	if Verify(stub, keys) {
		t.Fatal("a stub verifies")
	}
	good := sealedSecret()
	good.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "m"}}
	out, _ = CacheTransform(keys)(good)
	if kept := out.(*corev1.Secret); IsStub(kept) || kept.ManagedFields != nil || !Verify(kept, keys) {
		t.Fatal("a sealed Secret was not kept whole")
	}
}

func TestScrubKeepsOnlyOthersFields(t *testing.T) {
	s := sealedSecret()
	s.Labels["team"] = "a"
	s.Labels[LabelRole] = RoleRefreshState
	s.Annotations["note"] = "keep"
	Scrub(s)
	if len(s.Data) != 0 || s.Annotations["note"] != "keep" || len(s.Annotations) != 1 || s.Labels["team"] != "a" || s.Labels[LabelRole] != "" {
		t.Fatalf("scrubbed to %+v %v", s.ObjectMeta, s.Data)
	}
}
