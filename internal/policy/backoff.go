package policy

import (
	"strconv"
	"time"
)

// Backoff configures retries after a failed attempt.
type Backoff struct {
	// Initial is the delay after the first failure.
	Initial time.Duration
	// Max caps the delay.
	Max time.Duration
	// MaxTransient, when set, caps the delay instead of Max for a failure that can pass on its
	// own (Keycloak down, a timeout) while no valid token is left: the Secret is broken until the
	// next attempt, so once Keycloak is back the resource should not wait out a long backoff.
	// Failures only a change can fix (wrong credentials) keep Max: retrying them often changes
	// nothing but the load.
	MaxTransient time.Duration
}

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

// Failure is the failure record a resource's status keeps: facts about past attempts, never a
// decision. The retry time is computed from it each time it is needed.
type Failure struct {
	// At is when the last attempt failed (whole seconds, as status stores it).
	At time.Time
	// Count is how many attempts failed in a row (≥ 1).
	Count int32
	// Generation is the spec generation the failed attempt was made for: a newer spec skips
	// the backoff (the user changed something; try it at once).
	Generation int64
	// Transient: the failure can pass on its own (Keycloak unreachable, a timeout, a 5xx).
	Transient bool
}

// RetryAt is when the attempt after f may happen. validUntil is the expiry of the token that was
// valid when f happened (nil: none was), which caps the delay so that several retries fit into
// its remaining life. seed identifies the resource (its UID): the jitter is derived from it and
// from f, so every computation of the same failure gives the same time.
func (b Backoff) RetryAt(f Failure, validUntil *time.Time, seed string) time.Time {
	if validUntil != nil && !f.At.Before(*validUntil) {
		validUntil = nil // it had already expired when the attempt failed
	}
	if f.Transient && validUntil == nil && b.MaxTransient > 0 && b.MaxTransient < b.Max {
		b.Max = b.MaxTransient
	}
	rnd := Jitter(seed, f.At.UTC().Format(time.RFC3339), strconv.FormatInt(int64(f.Count), 10))
	return f.At.Add(b.Delay(f.Count, f.At, validUntil, rnd)).Truncate(time.Second)
}
