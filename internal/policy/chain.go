package policy

import "time"

// The refresh chain (RefreshToken and Password grants) is guarded by rules that a realm with
// strict rotation (revokeRefreshToken, reuse 0) imposes: redeeming an old refresh token there
// ends the session, so a chain must have one redeemer, and a redemption interrupted by a crash
// must be checked with Keycloak (introspection does not consume the token) before it is retried.
// The controller performs the steps; the rules of which step comes next live here.

// ChainStep is what to do next with a refresh chain.
type ChainStep string

// Chain steps.
const (
	// StepWait: another redemption of this chain started moments ago and may still be in flight;
	// redeeming now could redeem the same token twice. Try again later.
	StepWait ChainStep = "WaitForRedemptionInFlight"
	// StepCheckInterrupted: a redemption of the current refresh token started and never finished
	// (the operator stopped). Ask Keycloak whether the token is still active before redeeming it.
	StepCheckInterrupted ChainStep = "CheckInterruptedRedemption"
	// StepRedeem: redeem the current refresh token.
	StepRedeem ChainStep = "Redeem"
	// StepLogin: the chain ended or never started; log in again with the password (Password grant).
	StepLogin ChainStep = "Login"
	// StepNeedBootstrap: the chain ended; only a person can start a new one, by putting a new
	// refresh or offline token into the bootstrap Secret (RefreshToken grant).
	StepNeedBootstrap ChainStep = "NeedBootstrap"
)

// ChainInput are the facts NextChainStep looks at.
type ChainInput struct {
	Now time.Time
	// Password: the grant logs in with a password when the chain ends (else it is RefreshToken).
	Password bool
	// HasRefreshToken: the chain holds a refresh token to redeem.
	HasRefreshToken bool
	// Ended: the chain was recorded as ended (token rejected, or lost in a crash).
	Ended bool
	// MarkerSince is when the redemption recorded in the chain's marker started (zero: none).
	MarkerSince time.Time
	// MarkerIsCurrent: the marker names the chain's current refresh token (a marker of an older
	// token means that redemption finished and only the marker's removal was lost).
	MarkerIsCurrent bool
	// RequestTimeout bounds one exchange with Keycloak.
	RequestTimeout time.Duration
}

// InFlightGrace is added to the request timeout to tell a redemption that may still be in flight
// from one that was interrupted.
const InFlightGrace = 5 * time.Second

// NextChainStep says what to do next with a chain. A marker that is neither in flight nor about
// the current token is stale: the caller clears it and proceeds with the returned step.
func NextChainStep(in ChainInput) ChainStep {
	if !in.MarkerSince.IsZero() {
		if in.Now.Sub(in.MarkerSince) < in.RequestTimeout+InFlightGrace {
			return StepWait
		}
		if in.MarkerIsCurrent && in.HasRefreshToken && !in.Ended {
			return StepCheckInterrupted
		}
	}
	if in.Ended || !in.HasRefreshToken {
		if in.Password {
			return StepLogin
		}
		return StepNeedBootstrap
	}
	return StepRedeem
}

// AfterRejectedRefresh is the step after Keycloak rejected a refresh token (invalid_grant: it
// expired, was revoked or reused, or the session ended): a Password grant logs in again, a
// RefreshToken grant needs a person.
func AfterRejectedRefresh(password bool) ChainStep {
	if password {
		return StepLogin
	}
	return StepNeedBootstrap
}

// ChainEnd is when a refresh chain ends unless its token is redeemed before: the refresh token's
// own expiry (refresh_expires_in), or for an offline token without one (refresh_expires_in 0),
// the realm's offline session idle timeout counted from now. Zero when unknown.
func ChainEnd(now time.Time, refreshExpiresIn time.Duration, offline bool, offlineIdleTimeout time.Duration) time.Time {
	switch {
	case refreshExpiresIn > 0:
		return now.Add(refreshExpiresIn).Truncate(time.Second)
	case offline && offlineIdleTimeout > 0:
		return now.Add(offlineIdleTimeout).Truncate(time.Second)
	}
	return time.Time{}
}

// ChainExpiring reports whether a chain ending at end (zero: unknown) ends within warning of now:
// a person must bootstrap a new token before then.
func ChainExpiring(now, end time.Time, warning time.Duration) bool {
	return !end.IsZero() && end.Sub(now) < warning
}
