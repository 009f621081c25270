package tokensecret

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

func TestChainRoundTrip(t *testing.T) {
	c := Chain{
		RefreshToken: "r.e.f", ExpiresAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		SessionID: "sid", Offline: true, Bootstrap: "b", Redeeming: RedeemingMarker("r.e.f", time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)),
	}
	s := &corev1.Secret{}
	if !ApplyChain(s, c) {
		t.Fatal("no change reported")
	}
	if s.Labels[LabelManagedBy] != ManagedByValue || s.Labels[LabelRole] != RoleRefreshState {
		t.Errorf("labels %v", s.Labels)
	}
	if got := ReadChain(s); *got != c {
		t.Errorf("ReadChain = %+v, want %+v", *got, c)
	}
	if ApplyChain(s, c) {
		t.Error("second ApplyChain reported a change")
	}
	h, since, ok := ParseRedeeming(c.Redeeming)
	if !ok || h != Hash("r.e.f") || !since.Equal(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("ParseRedeeming = %q %v %v", h, since, ok)
	}
	c.Redeeming, c.Offline = "", false
	ApplyChain(s, c)
	if _, found := s.Annotations[annRedeeming]; found {
		t.Error("cleared marker still present")
	}
	if ReadChain(nil) != nil {
		t.Error("ReadChain(nil) != nil")
	}
	if _, _, ok := ParseRedeeming("garbage"); ok {
		t.Error("garbage marker parsed")
	}
}

func TestStateSecretName(t *testing.T) {
	short := &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Name: "train"}}
	if got := StateSecretName(short); got != "train-refresh-state" {
		t.Errorf("got %q", got)
	}
	long := &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("a", 250)}}
	got := StateSecretName(long)
	if len(got) > 253 || !strings.HasSuffix(got, "-refresh-state") {
		t.Errorf("long name %q (%d)", got, len(got))
	}
	other := &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("a", 249) + "b"}}
	if StateSecretName(other) == got {
		t.Error("two long names map to the same state Secret")
	}
}

// FuzzRead feeds arbitrary Secret contents to the readers of data the operator reads back.
func FuzzRead(f *testing.F) {
	f.Add("aaa.bbb.ccc", "2026-11-28T12:00:00Z", "2026-11-28T12:03:00Z", "2026-11-28T12:05:00Z", "h", "x@2026-11-28T12:00:00Z")
	f.Add("", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, tok, issued, renew, exp, hash, marker string) {
		s := &corev1.Secret{
			Data: map[string][]byte{KeyToken: []byte(tok), KeyTrackingToken: []byte(tok), KeyExpiresAt: []byte(exp), KeyRefreshToken: []byte(tok)},
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
				AnnotationIssuedAt: issued, AnnotationRenewAt: renew, AnnotationIssuedFor: hash,
				AnnotationTokenHash: hash, annRedeeming: marker, annRefreshExpiresAt: exp,
			}},
		}
		if st, ok := Read(s); ok && (st.AccessToken == "" || st.IssuedFor == "") {
			t.Fatalf("accepted an incomplete record: %+v", st)
		}
		_ = ReadChain(s)
		_, _, _ = ParseRedeeming(marker)
	})
}
