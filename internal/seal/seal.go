// Package seal lets the operator recognise what it wrote itself.
//
// The operator keeps state in Secrets of the tenants' namespaces (the consumer Secret with the
// access token and its times, the state Secret with the refresh chain and the revocation kit).
// Anyone who may edit Secrets there can change them, so nothing read back from them is trusted
// unless it carries a seal: an HMAC-SHA256, over the content and the identity of the resource
// it was written for, with a key only the operator holds (a Secret in the operator's own
// namespace, which tenants cannot read). An edited field, a Secret copied from another
// namespace or resource, or one forged from scratch fails the check; the operator then treats it
// as holding nothing of its own.
//
// What the seal does not stop: a copy the operator really wrote for the same resource, restored
// from a backup. Its fields are the operator's own, so they are true (a restored expiry is the
// token's real expiry); the controller compares it with what status says it issued last.
package seal

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// version prefixes every seal; a change of the canonical form gets a new one.
const version = "v1"

// KeySize is the size of a generated key in bytes.
const KeySize = 32

// DataKeyCurrent is the data key of the key Secret that holds the signing key. Every other
// non-empty data key holds an older key that still verifies (rotation: move the current key to
// another data key, put a new one under DataKeyCurrent, restart the operator).
const DataKeyCurrent = "key"

// Keys sign with one key and verify with all of them. The zero value signs nothing and verifies
// nothing.
type Keys struct {
	current []byte
	byID    map[string][]byte
}

// NewKeys returns Keys signing with current and verifying with current and older.
func NewKeys(current []byte, older ...[]byte) (*Keys, error) {
	if len(current) < 16 {
		return nil, fmt.Errorf("the signing key has %d bytes, want at least 16", len(current))
	}
	k := &Keys{current: slices.Clone(current), byID: map[string][]byte{}}
	for _, key := range append([][]byte{current}, older...) {
		if len(key) >= 16 {
			k.byID[keyID(key)] = slices.Clone(key)
		}
	}
	return k, nil
}

// MustKeys is NewKeys for tests and fixed keys; it panics on a short key.
func MustKeys(current []byte, older ...[]byte) *Keys {
	k, err := NewKeys(current, older...)
	if err != nil {
		panic(err)
	}
	return k
}

func keyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}

// Sign returns the seal of parts: "v1.<key id>.<mac>". The parts are length-prefixed, so no
// two different lists of parts give the same input.
func (k *Keys) Sign(parts ...[]byte) string {
	if k == nil || k.current == nil {
		return ""
	}
	return version + "." + keyID(k.current) + "." + base64.RawURLEncoding.EncodeToString(mac(k.current, parts))
}

// Verify reports whether sig is a seal of parts made with one of the keys.
func (k *Keys) Verify(sig string, parts ...[]byte) bool {
	if k == nil || sig == "" {
		return false
	}
	v, rest, ok := strings.Cut(sig, ".")
	if !ok || v != version {
		return false
	}
	id, b64, ok := strings.Cut(rest, ".")
	if !ok {
		return false
	}
	key, ok := k.byID[id]
	if !ok {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(b64)
	return err == nil && hmac.Equal(got, mac(key, parts))
}

func mac(key []byte, parts [][]byte) []byte {
	h := hmac.New(sha256.New, key)
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return h.Sum(nil)
}

// Load reads the keys from the Secret namespace/name, creating it with a new random key when it
// does not exist. Several replicas may start at once: the first create wins and the others read
// its key.
func Load(ctx context.Context, c client.Client, namespace, name string) (*Keys, error) {
	for attempt := 0; attempt < 3; attempt++ {
		s := &corev1.Secret{}
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s)
		switch {
		case err == nil:
			return fromSecret(s)
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("reading the operator's key Secret %s/%s: %w", namespace, name, err)
		}
		key := make([]byte, KeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{
				"app.kubernetes.io/name": "mlflow-token-operator", "app.kubernetes.io/component": "state-key",
			}, Annotations: map[string]string{
				"auth.mlflow-token-operator.io/purpose": "The operator seals what it writes into tenants' Secrets with this key. Deleting it makes every token be issued anew once and every refresh chain need a new bootstrap token.",
			}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{DataKeyCurrent: key},
		}
		err = c.Create(ctx, s)
		switch {
		case err == nil:
			return NewKeys(key)
		case !apierrors.IsAlreadyExists(err):
			return nil, fmt.Errorf("creating the operator's key Secret %s/%s: %w", namespace, name, err)
		}
	}
	return nil, errors.New("the operator's key Secret was created and deleted concurrently; giving up")
}

func fromSecret(s *corev1.Secret) (*Keys, error) {
	cur := s.Data[DataKeyCurrent]
	var older [][]byte
	names := make([]string, 0, len(s.Data))
	for n := range s.Data {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if n != DataKeyCurrent && len(s.Data[n]) > 0 && !bytes.Equal(s.Data[n], cur) {
			older = append(older, s.Data[n])
		}
	}
	k, err := NewKeys(cur, older...)
	if err != nil {
		return nil, fmt.Errorf("the operator's key Secret %s/%s: key %q: %w", s.Namespace, s.Name, DataKeyCurrent, err)
	}
	return k, nil
}
