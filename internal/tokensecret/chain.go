package tokensecret

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// The state Secret holds a refresh chain (RefreshToken and Password grants). It belongs to the
// operator: pods never mount it, and the consumer Secret never holds a refresh token.
const (
	// KeyRefreshToken holds the current refresh or offline token.
	KeyRefreshToken = "refresh-token"
	// LabelRole tells the operator's Secrets apart.
	LabelRole = annotationPrefix + "role"
	// RoleRefreshState is the value of LabelRole on state Secrets.
	RoleRefreshState = "refresh-state"

	annRefreshExpiresAt = annotationPrefix + "refresh-expires-at"
	annSessionID        = annotationPrefix + "session-id"
	annOffline          = annotationPrefix + "offline"
	annBootstrap        = annotationPrefix + "bootstrap-sha256"
	annRedeeming        = annotationPrefix + "redeeming"
	annEnded            = annotationPrefix + "chain-ended"

	stateSuffix = "-refresh-state"
)

// Chain is the refresh chain's state. It holds a refresh token: never log it.
type Chain struct {
	RefreshToken string
	// ExpiresAt is when the chain ends unless refreshed (zero: unknown).
	ExpiresAt time.Time
	SessionID string
	Offline   bool
	// Bootstrap is the hash of the bootstrap token the chain descends from (RefreshToken grant).
	Bootstrap string
	// Redeeming marks a redemption in flight: hash of the refresh token being redeemed and when
	// it started. A marker left behind means the operator stopped mid-redemption.
	Redeeming string
	// Ended records why the chain ended ("" while it lives).
	Ended string
}

// StateSecretName is the name of the resource's state Secret.
func StateSecretName(owner *authv1alpha1.MLflowAccessToken) string {
	name := owner.Name
	if len(name)+len(stateSuffix) > 253 {
		sum := sha256.Sum256([]byte(name))
		name = strings.TrimRight(name[:253-len(stateSuffix)-9], ".-") + "-" + hex.EncodeToString(sum[:4])
	}
	return name + stateSuffix
}

// ApplyChain writes c onto the state Secret s and reports whether anything changed.
func ApplyChain(s *corev1.Secret, c Chain) bool {
	before := s.DeepCopy()
	labels := map[string]string{}
	maps.Copy(labels, s.Labels)
	labels[LabelManagedBy] = ManagedByValue
	labels[LabelRole] = RoleRefreshState
	s.Labels = labels
	ann := map[string]string{}
	maps.Copy(ann, s.Annotations)
	set := func(k, v string) {
		if v == "" {
			delete(ann, k)
		} else {
			ann[k] = v
		}
	}
	exp := ""
	if !c.ExpiresAt.IsZero() {
		exp = formatTime(c.ExpiresAt)
	}
	offline := ""
	if c.Offline {
		offline = "true"
	}
	set(annRefreshExpiresAt, exp)
	set(annSessionID, c.SessionID)
	set(annOffline, offline)
	set(annBootstrap, c.Bootstrap)
	set(annRedeeming, c.Redeeming)
	set(annEnded, c.Ended)
	s.Annotations = ann
	s.Type = corev1.SecretTypeOpaque
	data := maps.Clone(s.Data)
	if data == nil {
		data = map[string][]byte{}
	}
	data[KeyRefreshToken] = []byte(c.RefreshToken)
	s.Data = data
	ensureFinalizer(s)
	return changed(before, s)
}

// changed reports whether s differs from before in what the operator writes.
func changed(before, s *corev1.Secret) bool {
	return !maps.Equal(before.Labels, s.Labels) || !maps.Equal(before.Annotations, s.Annotations) ||
		before.Type != s.Type || !slices.Equal(before.Finalizers, s.Finalizers) ||
		!maps.EqualFunc(before.Data, s.Data, func(a, b []byte) bool { return string(a) == string(b) })
}

// ensureFinalizer puts the operator's finalizer on one of its Secrets: it keeps the Secret, and
// the token or credentials in it, until the resource's deletion has revoked them, also when a
// namespace deletion removes the Secrets before the resource.
func ensureFinalizer(s *corev1.Secret) {
	if !slices.Contains(s.Finalizers, authv1alpha1.Finalizer) {
		s.Finalizers = append(slices.Clone(s.Finalizers), authv1alpha1.Finalizer)
	}
}

// ReadChain reads the state Secret (nil: no chain yet).
func ReadChain(s *corev1.Secret) *Chain {
	if s == nil {
		return nil
	}
	c := &Chain{
		RefreshToken: string(s.Data[KeyRefreshToken]),
		SessionID:    s.Annotations[annSessionID],
		Offline:      s.Annotations[annOffline] == "true",
		Bootstrap:    s.Annotations[annBootstrap],
		Redeeming:    s.Annotations[annRedeeming],
		Ended:        s.Annotations[annEnded],
	}
	if t, err := time.Parse(time.RFC3339, s.Annotations[annRefreshExpiresAt]); err == nil {
		c.ExpiresAt = t
	}
	return c
}

// Hash is a short SHA-256 of a secret value, to recognise it without storing it.
func Hash(secret string) string { return tokenHash(secret) }

// RedeemingMarker says "redeeming this token since now".
func RedeemingMarker(refreshToken string, now time.Time) string {
	return Hash(refreshToken) + "@" + formatTime(now)
}

// ParseRedeeming splits a marker into the token hash and its start time.
func ParseRedeeming(marker string) (hash string, since time.Time, ok bool) {
	h, ts, found := strings.Cut(marker, "@")
	if !found {
		return "", time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, ts)
	return h, t, err == nil
}
