// Package policy owns every timing rule of the operator, as pure functions of their inputs:
// when a token is renewed (RenewalTime), how long to wait after failures (Backoff, RetryAt),
// whether a token must be obtained now (Decide), what to do with a refresh chain (NextChainStep,
// ChainEnd), and how long deletion waits for revocation (Revocation). Time and randomness are
// passed in: jitter is derived from the token's identity (Jitter), so the same facts always give
// the same decision.
//
// The controller feeds these functions facts only: what the Secret holds (issue time, expiry, the
// inputs the token was issued for), the failure record in status (when the last attempt failed,
// how many failed in a row, at which generation), the spec and the clock. What a function returns
// (a renewal time, a retry time) is reported in status and annotations, and never read back as an
// input of the next decision: a stored decision that is read back outlives the facts it came from
// (a retry time rewritten by an unrelated update, a renewBefore change that waits for the next
// rotation).
package policy

import (
	"hash/fnv"

	"time"
)

const (
	// DefaultFraction of the lifetime after which a token is renewed when renewBefore is unset.
	DefaultFraction = 2.0 / 3.0
	// JitterFraction bounds the random jitter subtracted from the renewal time, as a fraction
	// of the token lifetime.
	JitterFraction = 0.1
	// ExpiryFloor is the latest a renewal may be scheduled, before expiry. For very short
	// lifetimes it shrinks to a tenth of the lifetime.
	ExpiryFloor = 5 * time.Second
)

// Plan is the renewal plan for one token.
type Plan struct {
	// RenewAt is when to renew, truncated to whole seconds (status times round-trip at
	// second precision; an untruncated time would requeue a moment too early).
	RenewAt time.Time
	// Note explains an adjustment of the requested renewBefore, or is empty.
	Note string
}

// RenewalTime computes when a token issued at issuedAt and expiring at expiresAt is renewed.
// renewBefore is the user's setting (nil for the default of two thirds of the lifetime).
// rnd in [0,1) selects the jitter; callers pass Jitter of the token's identity, so the same
// token always gets the same renewal time, however often it is computed.
func RenewalTime(issuedAt, expiresAt time.Time, renewBefore *time.Duration, rnd float64) Plan {
	lifetime := expiresAt.Sub(issuedAt)
	if lifetime <= 0 {
		// Already expired on arrival (clock skew or a broken server): renew now.
		return Plan{RenewAt: issuedAt.Truncate(time.Second), Note: "token lifetime is not positive"}
	}
	if rnd < 0 || rnd >= 1 {
		rnd = 0
	}
	jitter := time.Duration(rnd * JitterFraction * float64(lifetime))

	var s Plan
	switch {
	case renewBefore == nil:
		s.RenewAt = issuedAt.Add(time.Duration(DefaultFraction * float64(lifetime)))
	case *renewBefore >= lifetime:
		s.RenewAt = issuedAt.Add(lifetime / 3)
		s.Note = "renewBefore " + renewBefore.String() + " is not shorter than the token lifetime " +
			lifetime.Round(time.Second).String() + "; renewing after a third of the lifetime"
	default:
		s.RenewAt = expiresAt.Add(-*renewBefore)
	}
	s.RenewAt = s.RenewAt.Add(-jitter)

	floor := ExpiryFloor
	if floor > lifetime/10 {
		floor = lifetime / 10
	}
	if latest := expiresAt.Add(-floor); s.RenewAt.After(latest) {
		s.RenewAt = latest
	}
	// Never schedule before the token was issued (a renewBefore close to the lifetime plus
	// jitter could otherwise ask for an immediate, endless re-issue).
	if earliest := issuedAt.Add(lifetime / 10); s.RenewAt.Before(earliest) {
		s.RenewAt = earliest
	}
	s.RenewAt = s.RenewAt.Truncate(time.Second)
	return s
}

// Jitter maps the parts (a UID, an issue time, a failure count ...) to a number in [0,1) that is
// the same for the same parts and spread evenly across different ones: randomness that a restart,
// a second replica or a re-computation on the next reconcile all agree on.
func Jitter(parts ...string) float64 {
	h := fnv.New64a()
	for _, p := range parts {
		_, _ = h.Write([]byte(p))
		_, _ = h.Write([]byte{0})
	}
	// 53 bits: the float64 mantissa; the result is in [0,1).
	return float64(h.Sum64()>>11) / (1 << 53)
}
