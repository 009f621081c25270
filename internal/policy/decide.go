package policy

import "time"

// Why names the outcome of Decide.
type Why string

// Outcomes of Decide.
const (
	// NotDue: the token in the Secret is good and its renewal time has not come.
	NotDue Why = "NotDue"
	// BackingOff: the last attempt failed and its retry time has not come.
	BackingOff Why = "BackingOff"
	// NoToken: the Secret holds no usable token (absent, edited, never issued).
	NoToken Why = "NoToken"
	// InputsChanged: the token was issued for a different Keycloak, client or grant.
	InputsChanged Why = "InputsChanged"
	// Due: the renewal time has come.
	Due Why = "Due"
	// Requested: a person asked for a rotation (kubectl mlflow-token renew or revoke).
	Requested Why = "Requested"
)

// Token holds the facts of the token the Secret holds.
type Token struct {
	IssuedAt  time.Time
	ExpiresAt time.Time
	// InputsMatch: it was issued for the current Keycloak, client and grant.
	InputsMatch bool
}

// Input is everything Decide looks at: facts, never an earlier decision.
type Input struct {
	Now time.Time
	// Seed identifies the resource (its UID); jitter is derived from it.
	Seed string
	// Token is the token in the Secret; nil when the Secret holds none (absent, edited by hand,
	// never issued).
	Token *Token
	// RenewBefore is spec.renewBefore (nil: two thirds of the lifetime).
	RenewBefore *time.Duration
	// Failure is the record of failed attempts in a row; nil after a success.
	Failure *Failure
	// Generation is the spec's current generation.
	Generation int64
	// Requested: a person asked for a rotation that has not been honoured yet. It skips the
	// schedule and the backoff.
	Requested bool
	// Backoff configures the retries after failures.
	Backoff Backoff
}

// Decision says whether to obtain a token now, and otherwise when to look again.
type Decision struct {
	Issue bool
	Why   Why
	// RenewAt is the current token's renewal time (zero without a token).
	RenewAt time.Time
	// RetryAt is when the next attempt may happen after a failure (zero when not failing).
	RetryAt time.Time
	// Next is when to look again when Issue is false: the renewal or retry time, or the
	// token's expiry if that comes first (Ready must turn False then).
	Next time.Time
	// Note explains an adjustment of the requested renewBefore, or is empty.
	Note string
}

// Schedule returns the renewal plan of a token: RenewalTime with the jitter derived from the
// resource and the token's issue time. Every computation for the same token agrees, and a
// change of renewBefore takes effect at once.
func Schedule(seed string, t Token, renewBefore *time.Duration) Plan {
	return RenewalTime(t.IssuedAt, t.ExpiresAt, renewBefore, Jitter(seed, t.IssuedAt.UTC().Format(time.RFC3339)))
}

// Decide is the whole "is a new token needed now?" question, as a pure function.
func Decide(in Input) Decision {
	var d Decision
	if in.Token != nil {
		plan := Schedule(in.Seed, *in.Token, in.RenewBefore)
		d.RenewAt, d.Note = plan.RenewAt, plan.Note
	}
	backingOff := false
	if in.Failure != nil && in.Failure.Generation == in.Generation {
		var validUntil *time.Time
		if in.Token != nil {
			validUntil = &in.Token.ExpiresAt
		}
		d.RetryAt = in.Backoff.RetryAt(*in.Failure, validUntil, in.Seed)
		backingOff = in.Now.Before(d.RetryAt)
	}

	switch {
	case in.Requested:
		d.Issue, d.Why = true, Requested
	case in.Token != nil && in.Token.InputsMatch && in.Now.Before(d.RenewAt):
		d.Why, d.Next = NotDue, d.RenewAt
	case backingOff:
		d.Why, d.Next = BackingOff, d.RetryAt
	case in.Token == nil:
		d.Issue, d.Why = true, NoToken
	case !in.Token.InputsMatch:
		d.Issue, d.Why = true, InputsChanged
	default:
		d.Issue, d.Why = true, Due
	}
	if !d.Issue && in.Token != nil && in.Now.Before(in.Token.ExpiresAt) && in.Token.ExpiresAt.Before(d.Next) {
		d.Next = in.Token.ExpiresAt
	}
	return d
}
