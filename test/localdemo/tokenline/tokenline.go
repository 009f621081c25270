// Package tokenline is the one line the local demo's reader pod (test/localdemo/tokenwatch) prints
// each time the token in its mounted Secret changes, and its parser (test/localdemo reads the pod's
// log through the API). A line names a token by a fingerprint only, never the token:
//
//	2026-11-30T10:00:05.123456Z token sha256:0a1b2c3d4e5f expires 2026-11-30T10:00:17Z (in 11.9s)
//
// The first field is when the pod read the token (UTC, to the microsecond): the demo subtracts the
// time it saw the Secret change to show how long delivery into the pod took.
package tokenline

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
)

// Line is one token read by the pod.
type Line struct {
	Seen        time.Time // when the pod read it
	Fingerprint string    // Fingerprint of the token
	Expires     time.Time // the JWT's exp claim; zero when the token is not a JWT with one
}

// Fingerprint names a token without revealing it: "sha256:" and the first 12 hex digits of the
// SHA-256 of its bytes (surrounding white space removed, as clients send it).
func Fingerprint(token []byte) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(string(token))))
	return "sha256:" + hex.EncodeToString(sum[:6])
}

// Expiry reads the exp claim of a JWT without verifying its signature (internal/jwtclaims): it
// is shown, not trusted.
func Expiry(token []byte) (time.Time, bool) {
	c, err := jwtclaims.Parse(strings.TrimSpace(string(token)))
	if err != nil || c.ExpiresAt.IsZero() || c.ExpiresAt.Unix() <= 0 {
		return time.Time{}, false
	}
	return c.ExpiresAt.UTC(), true
}

// Of is the line for token, read at seen.
func Of(token []byte, seen time.Time) Line {
	exp, _ := Expiry(token)
	return Line{Seen: seen, Fingerprint: Fingerprint(token), Expires: exp}
}

// String formats the line as the pod prints it.
func (l Line) String() string {
	seen := l.Seen.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano)
	if l.Expires.IsZero() {
		return fmt.Sprintf("%s token %s expires ? (not a JWT with an exp claim)", seen, l.Fingerprint)
	}
	return fmt.Sprintf("%s token %s expires %s (in %.1fs)", seen, l.Fingerprint,
		l.Expires.UTC().Format(time.RFC3339), l.Expires.Sub(l.Seen).Seconds())
}

// Parse reads a line printed by String; ok is false for any other line.
func Parse(s string) (l Line, ok bool) {
	f := strings.Fields(s)
	if len(f) < 5 || f[1] != "token" || !strings.HasPrefix(f[2], "sha256:") || len(f[2]) != len("sha256:")+12 || f[3] != "expires" {
		return Line{}, false
	}
	if _, err := hex.DecodeString(strings.TrimPrefix(f[2], "sha256:")); err != nil {
		return Line{}, false
	}
	seen, err := time.Parse(time.RFC3339Nano, f[0])
	if err != nil {
		return Line{}, false
	}
	l = Line{Seen: seen, Fingerprint: f[2]}
	if f[4] != "?" {
		if l.Expires, err = time.Parse(time.RFC3339, f[4]); err != nil {
			return Line{}, false
		}
		l.Expires = l.Expires.Truncate(time.Second) // exp claims are whole seconds
	}
	return l, true
}
