package tokensecret

import (
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/seal"
)

// The operator's Secrets sit in tenants' namespaces, where tenants may edit them. Every write of
// the operator seals the Secret (internal/seal): the seal covers what the operator put there
// (data, its labels and annotations, type) and whom it is for (namespace, name, the UID of the
// controlling MLflowAccessToken). A reader trusts a Secret only if Verify says the seal holds.
// Labels and annotations others add (a GitOps tool, a person) are outside the seal and may
// change freely.

// AnnotationSeal holds the seal.
const AnnotationSeal = annotationPrefix + "seal"

// annotationUnverified marks a Secret the cache keeps as a stub (see Stub). It exists only in the
// operator's memory: a stub is never written back.
const annotationUnverified = annotationPrefix + "unverified-stub"

// sealParts is the canonical content a seal covers.
func sealParts(s *corev1.Secret) [][]byte {
	owner := metav1.GetControllerOfNoCopy(s)
	var ownerUID types.UID
	if owner != nil {
		ownerUID = owner.UID
	}
	parts := [][]byte{
		[]byte("mlflow-token-operator/secret"), []byte(s.Namespace), []byte(s.Name), []byte(ownerUID), []byte(s.Type),
		[]byte(s.Labels[LabelManagedBy]), []byte(s.Labels[LabelRole]),
	}
	keys := slices.Sorted(maps.Keys(s.Annotations))
	for _, k := range keys {
		if strings.HasPrefix(k, annotationPrefix) && k != AnnotationSeal && k != annotationUnverified {
			parts = append(parts, []byte("a:"+k), []byte(s.Annotations[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Data)) {
		parts = append(parts, []byte("d:"+k), s.Data[k])
	}
	return parts
}

// Seal stamps s with the seal of its content and reports whether that changed it.
func Seal(s *corev1.Secret, k *seal.Keys) bool {
	sig := k.Sign(sealParts(s)...)
	if s.Annotations[AnnotationSeal] == sig {
		return false
	}
	ann := maps.Clone(s.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationSeal] = sig
	s.Annotations = ann
	return true
}

// Verify reports whether s carries a valid seal of the operator: nothing the operator wrote was
// changed since, and it was written for this namespace, name and controlling resource.
func Verify(s *corev1.Secret, k *seal.Keys) bool {
	if s == nil || IsStub(s) {
		return false
	}
	return k.Verify(s.Annotations[AnnotationSeal], sealParts(s)...)
}

// IsStub reports whether s is a stub the cache keeps in place of a Secret whose seal did not
// hold (see Stub).
func IsStub(s *corev1.Secret) bool {
	return s != nil && s.Annotations[annotationUnverified] == "true"
}

// Stub is what the operator's cache keeps of a Secret that carries the operator's label but not
// its seal (edited, copied, or forged by a tenant): its identity, the controller reference, the
// operator's finalizer and labels, and nothing else. A tenant who creates thousands of large
// Secrets with the operator's label costs the operator a few hundred bytes each, not their size.
// Code that must write such a Secret reads it whole from the API server first.
func Stub(s *corev1.Secret) *corev1.Secret {
	out := &corev1.Secret{TypeMeta: s.TypeMeta, Type: s.Type}
	out.Namespace, out.Name, out.UID, out.ResourceVersion = s.Namespace, s.Name, s.UID, s.ResourceVersion
	out.Generation, out.CreationTimestamp, out.DeletionTimestamp = s.Generation, s.CreationTimestamp, s.DeletionTimestamp
	if owner := metav1.GetControllerOfNoCopy(s); owner != nil {
		out.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	if slices.Contains(s.Finalizers, authv1alpha1.Finalizer) {
		out.Finalizers = []string{authv1alpha1.Finalizer}
	}
	out.Labels = map[string]string{}
	for _, k := range []string{LabelManagedBy, LabelRole} {
		if v, ok := s.Labels[k]; ok {
			out.Labels[k] = v
		}
	}
	out.Annotations = map[string]string{annotationUnverified: "true"}
	return out
}

// CacheTransform is the cache's transform for the operator's Secrets: sealed ones are kept
// whole (minus managed fields), all others as stubs.
func CacheTransform(k *seal.Keys) func(any) (any, error) {
	return func(o any) (any, error) {
		s, ok := o.(*corev1.Secret)
		if !ok {
			return o, nil
		}
		if !Verify(s, k) {
			return Stub(s), nil
		}
		s.ManagedFields = nil
		return s, nil
	}
}

// Scrub removes from s everything the operator would have written (its data, its annotations,
// its role label), keeping what others put there. A Secret whose seal does not hold is scrubbed
// before the operator writes it, so that a field a tenant placed there is never sealed as the
// operator's own.
func Scrub(s *corev1.Secret) {
	s.Data, s.StringData = nil, nil
	ann := map[string]string{}
	for k, v := range s.Annotations {
		if !strings.HasPrefix(k, annotationPrefix) {
			ann[k] = v
		}
	}
	s.Annotations = ann
	labels := maps.Clone(s.Labels)
	delete(labels, LabelRole)
	s.Labels = labels
}

// HasSeal reports whether s carries a seal annotation at all (valid or not). A Secret of the
// operator without one was written by a version before seals (see the controller's legacy rules).
func HasSeal(s *corev1.Secret) bool {
	_, ok := s.Annotations[AnnotationSeal]
	return ok
}
