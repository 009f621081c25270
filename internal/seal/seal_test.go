package seal

import (
	"context"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

var (
	keyA = []byte("0123456789abcdef0123456789abcdef")
	keyB = []byte("fedcba9876543210fedcba9876543210")
)

func TestSignVerify(t *testing.T) {
	k := MustKeys(keyA)
	sig := k.Sign([]byte("a"), []byte("bc"))
	if !k.Verify(sig, []byte("a"), []byte("bc")) {
		t.Fatal("own seal does not verify")
	}
	for name, parts := range map[string][][]byte{
		"moved boundary": {[]byte("ab"), []byte("c")},
		"changed part":   {[]byte("a"), []byte("bd")},
		"extra part":     {[]byte("a"), []byte("bc"), nil},
		"fewer parts":    {[]byte("a")},
	} {
		if k.Verify(sig, parts...) {
			t.Errorf("%s: verified", name)
		}
	}
	if MustKeys(keyB).Verify(sig, []byte("a"), []byte("bc")) {
		t.Error("another key verifies the seal")
	}
	for _, bad := range []string{"", "v1", "v2." + sig[3:], sig + "x", strings.Replace(sig, ".", "..", 1)} {
		if k.Verify(bad, []byte("a"), []byte("bc")) {
			t.Errorf("garbled seal %q verified", bad)
		}
	}
	var none *Keys
	if none.Sign([]byte("a")) != "" || none.Verify(sig, []byte("a"), []byte("bc")) {
		t.Error("nil keys sign or verify")
	}
	if _, err := NewKeys([]byte("short")); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

func TestRotation(t *testing.T) {
	oldSig := MustKeys(keyA).Sign([]byte("x"))
	rotated := MustKeys(keyB, keyA)
	if !rotated.Verify(oldSig, []byte("x")) {
		t.Fatal("a seal of the previous key does not verify after rotation")
	}
	if !strings.Contains(rotated.Sign([]byte("x")), "."+keyID(keyB)+".") {
		t.Fatal("the rotated keys do not sign with the new key")
	}
	if MustKeys(keyB).Verify(oldSig, []byte("x")) {
		t.Fatal("a dropped key still verifies")
	}
}

func TestLoadCreatesOnceAndReads(t *testing.T) {
	sch := runtime.NewScheme()
	_ = corev1.AddToScheme(sch)
	c := fake.NewClientBuilder().WithScheme(sch).Build()
	ctx := context.Background()
	var wg sync.WaitGroup
	keys := make([]*Keys, 4)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := Load(ctx, c, "mto-system", "state-key")
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	sig := keys[0].Sign([]byte("p"))
	for i, k := range keys {
		if !k.Verify(sig, []byte("p")) {
			t.Fatalf("replica %d loaded another key", i)
		}
	}
	s := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "mto-system", Name: "state-key"}, s); err != nil {
		t.Fatal(err)
	}
	if len(s.Data[DataKeyCurrent]) != KeySize {
		t.Fatalf("key of %d bytes", len(s.Data[DataKeyCurrent]))
	}
	// An older key next to the current one keeps verifying.
	s.Data["previous"] = keyA
	if err := c.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	k, err := Load(ctx, c, "mto-system", "state-key")
	if err != nil || !k.Verify(MustKeys(keyA).Sign([]byte("p")), []byte("p")) {
		t.Fatalf("the previous key does not verify after a reload (%v)", err)
	}
	bad := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "mto-system", Name: "broken"}, Data: map[string][]byte{DataKeyCurrent: []byte("x")}}
	if err := c.Create(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ctx, c, "mto-system", "broken"); err == nil || !strings.Contains(err.Error(), "mto-system/broken") {
		t.Fatalf("a short key gave %v, want an error naming the Secret", err)
	}
}
