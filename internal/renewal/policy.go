// Package renewal decides when a token is renewed and how long to wait after a failure.
// Everything here is a pure function of its inputs: time and randomness are passed in,
// so the decisions can be tested with a fake clock and fixed random numbers.
package renewal

import (
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

// Schedule is the renewal plan for one token.
type Schedule struct {
	// RenewAt is when to renew, truncated to whole seconds (status times round-trip at
	// second precision; an untruncated time would requeue a moment too early).
	RenewAt time.Time
	// Note explains an adjustment of the requested renewBefore, or is empty.
	Note string
}

// RenewalTime computes when a token issued at issuedAt and expiring at expiresAt is renewed.
// renewBefore is the user's setting (nil for the default of two thirds of the lifetime).
// rnd is a random number in [0,1) that selects the jitter; it is rolled once per token
// and the result is stored, never re-rolled on later reconciles.
func RenewalTime(issuedAt, expiresAt time.Time, renewBefore *time.Duration, rnd float64) Schedule {
	lifetime := expiresAt.Sub(issuedAt)
	if lifetime <= 0 {
		// Already expired on arrival (clock skew or a broken server): renew now.
		return Schedule{RenewAt: issuedAt.Truncate(time.Second), Note: "token lifetime is not positive"}
	}
	if rnd < 0 || rnd >= 1 {
		rnd = 0
	}
	jitter := time.Duration(rnd * JitterFraction * float64(lifetime))

	var s Schedule
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

// Backoff configures retries after a failed attempt.
type Backoff struct {
	// Initial is the delay after the first failure.
	Initial time.Duration
	// Max caps the delay.
	Max time.Duration
}

// DefaultBackoff starts at 2s and doubles up to 5 minutes.
var DefaultBackoff = Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute}

// MinRetry is the shortest delay between two attempts for one resource.
const MinRetry = time.Second

// Delay returns how long to wait after the given number of consecutive failures (1 for the
// first). The exponential delay is capped by b.Max and, while the current token is still
// valid, by a quarter of its remaining life, so that several retries happen before it
// expires. rnd in [0,1) spreads the delay over [75%, 100%] of its value (jitter), so
// resources that failed together do not retry together.
func (b Backoff) Delay(failures int32, now time.Time, expiresAt *time.Time, rnd float64) time.Duration {
	if failures < 1 {
		failures = 1
	}
	d := b.Initial
	for i := int32(1); i < failures && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	if expiresAt != nil {
		if remaining := expiresAt.Sub(now); remaining > 0 && d > remaining/4 {
			d = remaining / 4
		}
	}
	if rnd < 0 || rnd >= 1 {
		rnd = 0
	}
	d = time.Duration(float64(d) * (1 - 0.25*rnd))
	if d < MinRetry {
		d = MinRetry
	}
	return d.Truncate(time.Second)
}
