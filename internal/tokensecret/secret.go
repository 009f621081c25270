// Package tokensecret says what the Secret that consumers mount looks like: its keys, labels
// and annotations. The Secret describes itself: next to the token it records when the token
// was issued, when it expires, when it is due for renewal and which spec it was issued for.
// So the controller can tell from the Secret alone whether the token in it is still good,
// also when the resource's status is stale or was lost.
package tokensecret

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// Keys of the consumer Secret.
const (
	// KeyToken holds the access token, for file mounts (<mountPath>/token).
	KeyToken = "token"
	// KeyTrackingToken holds the same token under the name MLflow's client reads, for envFrom.
	// An environment variable never changes in a running container: prefer the file.
	KeyTrackingToken = "MLFLOW_TRACKING_TOKEN"
	// KeyTrackingURI holds spec.mlflow.trackingURI when set.
	KeyTrackingURI = "MLFLOW_TRACKING_URI"
	// KeyExpiresAt holds the token's expiry as RFC 3339.
	KeyExpiresAt = "expiresAt"
)

// Labels and annotations the operator sets on the Secret.
const (
	// LabelManagedBy marks Secrets the operator owns; the operator's cache holds only those.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = "mlflow-token-operator"

	annotationPrefix = "auth.mlflow-token-operator.io/"
	// AnnotationIssuedFor records a hash of the spec fields the token was issued for.
	AnnotationIssuedFor = annotationPrefix + "issued-for"
	// AnnotationIssuedAt records when the token was obtained (RFC 3339).
	AnnotationIssuedAt = annotationPrefix + "issued-at"
	// AnnotationRenewAt reports when the token is due for renewal (RFC 3339); never read back.
	AnnotationRenewAt = annotationPrefix + "renew-at"
	// AnnotationTokenHash records a short SHA-256 of the token, to notice a hand-edited Secret.
	// It reveals nothing the Secret's own data does not.
	AnnotationTokenHash = annotationPrefix + "token-sha256"
)

// State describes the token in a Secret: facts recorded when it was obtained. It holds the
// token: never log it.
type State struct {
	AccessToken string
	IssuedAt    time.Time
	ExpiresAt   time.Time
	// IssuedFor is the hash of the spec fields the token was issued for.
	IssuedFor string
}

// Apply writes the desired labels, annotations, type and data onto s, keeping labels and
// annotations that others (a GitOps tool, a person) put there. It returns whether anything
// changed. trackingURI is written as MLFLOW_TRACKING_URI when set. The resource's own labels and annotations are never copied. renewAt is reported in
// an annotation for people reading the Secret; the operator never reads it back (it computes the
// renewal time from the facts each time).
func Apply(s *corev1.Secret, owner *authv1alpha1.MLflowAccessToken, st State, renewAt time.Time, trackingURI string) bool {
	before := s.DeepCopy()

	labels := map[string]string{}
	annotations := map[string]string{}
	maps.Copy(labels, s.Labels)
	maps.Copy(annotations, s.Annotations)
	if t := owner.Spec.SecretTemplate; t != nil {
		maps.Copy(labels, t.LabelMap())
		maps.Copy(annotations, t.Annotations)
	}
	labels[LabelManagedBy] = ManagedByValue
	annotations[AnnotationIssuedFor] = st.IssuedFor
	annotations[AnnotationIssuedAt] = formatTime(st.IssuedAt)
	annotations[AnnotationRenewAt] = formatTime(renewAt)
	annotations[AnnotationTokenHash] = tokenHash(st.AccessToken)
	s.Labels, s.Annotations = labels, annotations

	if s.Type == "" {
		s.Type = corev1.SecretTypeOpaque
	}
	data := map[string][]byte{
		KeyToken:         []byte(st.AccessToken),
		KeyTrackingToken: []byte(st.AccessToken),
		KeyExpiresAt:     []byte(formatTime(st.ExpiresAt)),
	}
	if trackingURI != "" {
		data[KeyTrackingURI] = []byte(trackingURI)
	}
	s.Data = data
	s.StringData = nil
	ensureFinalizer(s)
	return changed(before, s)
}

// Read returns the token state recorded in s. ok is false when s is nil, lacks a piece, or
// its token does not match the recorded hash (someone edited the Secret by hand).
func Read(s *corev1.Secret) (st State, ok bool) {
	if s == nil {
		return State{}, false
	}
	st.AccessToken = string(s.Data[KeyToken])
	st.IssuedFor = s.Annotations[AnnotationIssuedFor]
	var errs [2]error
	st.IssuedAt, errs[0] = time.Parse(time.RFC3339, s.Annotations[AnnotationIssuedAt])
	st.ExpiresAt, errs[1] = time.Parse(time.RFC3339, string(s.Data[KeyExpiresAt]))
	for _, err := range errs {
		if err != nil {
			return st, false
		}
	}
	if st.AccessToken == "" || st.IssuedFor == "" || string(s.Data[KeyTrackingToken]) != st.AccessToken ||
		s.Annotations[AnnotationTokenHash] != tokenHash(st.AccessToken) {
		return st, false
	}
	return st, true
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:16])
}
