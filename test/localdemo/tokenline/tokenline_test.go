package tokenline

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func jwt(payload string) []byte {
	enc := base64.RawURLEncoding.EncodeToString
	return []byte(enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(payload)) + ".c2ln")
}

func TestFingerprint(t *testing.T) {
	// sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
	if got := Fingerprint([]byte("abc")); got != "sha256:ba7816bf8f01" {
		t.Errorf("Fingerprint(abc) = %s", got)
	}
	if Fingerprint([]byte("abc\n")) != Fingerprint([]byte("abc")) {
		t.Error("a trailing newline changes the fingerprint")
	}
	if Fingerprint([]byte("abd")) == Fingerprint([]byte("abc")) {
		t.Error("two tokens, one fingerprint")
	}
}

func TestExpiry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token []byte
		want  time.Time
		ok    bool
	}{
		{"integer exp", jwt(`{"exp":1790000000,"sub":"x"}`), time.Unix(1790000000, 0).UTC(), true},
		{"fractional exp", jwt(`{"exp":1790000000.5}`), time.Unix(1790000000, 0).UTC(), true},
		{"padded payload", []byte("e30." + base64.URLEncoding.EncodeToString([]byte(`{"exp":1790000000}`)) + ".c2ln"), time.Unix(1790000000, 0).UTC(), true},
		{"no exp", jwt(`{"sub":"x"}`), time.Time{}, false},
		{"exp is text", jwt(`{"exp":"soon"}`), time.Time{}, false},
		{"not JSON", jwt(`nope`), time.Time{}, false},
		{"two parts", []byte("a.b"), time.Time{}, false},
		{"opaque token", []byte("8f0c2a"), time.Time{}, false},
	} {
		got, ok := Expiry(tc.token)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("%s: Expiry = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLineRoundTrip(t *testing.T) {
	seen := time.Date(2026, 11, 30, 10, 0, 5, 123456789, time.UTC)
	token := jwt(`{"exp":1796032817}`) // 2026-11-30T10:00:17Z
	l := Of(token, seen)
	s := l.String()
	if want := "2026-11-30T10:00:05.123456Z token " + Fingerprint(token) + " expires 2026-11-30T10:00:17Z (in 11.9s)"; s != want {
		t.Errorf("String() = %q\nwant       %q", s, want)
	}
	if strings.Contains(s, string(token)) || strings.Contains(s, strings.Split(string(token), ".")[1]) {
		t.Errorf("the line holds the token: %q", s)
	}
	back, ok := Parse(s)
	if !ok || back.Fingerprint != l.Fingerprint || !back.Expires.Equal(l.Expires) || !back.Seen.Equal(seen.Truncate(time.Microsecond)) {
		t.Errorf("Parse(%q) = %+v, %v", s, back, ok)
	}

	opaque := Of([]byte("8f0c2a"), seen)
	back, ok = Parse(opaque.String())
	if !ok || !back.Expires.IsZero() || back.Fingerprint != opaque.Fingerprint {
		t.Errorf("Parse(%q) = %+v, %v", opaque.String(), back, ok)
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"waiting for /var/run/secrets/mlflow/token",
		"2026-11-30T10:00:05Z token sha256:0a1b expires 2026-11-30T10:00:17Z (in 12.0s)",         // short fingerprint
		"2026-11-30T10:00:05Z token sha256:0a1b2c3d4e5g expires 2026-11-30T10:00:17Z (in 12.0s)", // not hex
		"10:00:05 token sha256:0a1b2c3d4e5f expires 2026-11-30T10:00:17Z (in 12.0s)",             // no date
		"2026-11-30T10:00:05Z token sha256:0a1b2c3d4e5f expires tomorrow (in 12.0s)",
		"2026-11-30T10:00:05Z token md5:0a1b2c3d4e5f expires 2026-11-30T10:00:17Z (in 12.0s)",
	} {
		if l, ok := Parse(s); ok {
			t.Errorf("Parse(%q) = %+v, want no line", s, l)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Of(jwt(`{"exp":1796032817}`), time.Now()).String())
	f.Add("2026-11-30T10:00:05Z token sha256:0a1b2c3d4e5f expires ? (not a JWT with an exp claim)")
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := Parse(s)
		if !ok {
			return
		}
		again, ok := Parse(l.String())
		if !ok || again.Fingerprint != l.Fingerprint || !again.Expires.Equal(l.Expires) {
			t.Errorf("%q parsed to %+v, which formats to %q, which parses to %+v, %v", s, l, l.String(), again, ok)
		}
	})
}
