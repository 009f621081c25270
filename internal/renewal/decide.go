package renewal

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

// Input is what Decide looks at.
type Input struct {
	Now time.Time
	// HaveToken: the Secret holds a complete, untampered token record.
	HaveToken bool
	// InputsMatch: that token was issued for the current Keycloak, client and grant.
	InputsMatch bool
	// RenewAt: the token's scheduled renewal time (meaningful when HaveToken).
	RenewAt time.Time
	// RetryAt: after a failure, when the next attempt may happen; nil when not failing.
	RetryAt *time.Time
	// SpecChanged: the spec changed since the last attempt; a change skips the backoff.
	SpecChanged bool
	// Requested: a person asked for a rotation that has not been honoured yet. It skips the
	// schedule and the backoff.
	Requested bool
}

// Decision says whether to obtain a token now, and otherwise when to look again.
type Decision struct {
	Issue bool
	Why   Why
	// RequeueAfter is set when Issue is false.
	RequeueAfter time.Duration
}

// Decide is the whole "is a new token needed now?" question, as a pure function.
func Decide(in Input) Decision {
	if in.Requested {
		return Decision{Issue: true, Why: Requested}
	}
	if in.HaveToken && in.InputsMatch && in.Now.Before(in.RenewAt) {
		return Decision{Why: NotDue, RequeueAfter: in.RenewAt.Sub(in.Now)}
	}
	if in.RetryAt != nil && in.Now.Before(*in.RetryAt) && !in.SpecChanged {
		return Decision{Why: BackingOff, RequeueAfter: in.RetryAt.Sub(in.Now)}
	}
	switch {
	case !in.HaveToken:
		return Decision{Issue: true, Why: NoToken}
	case !in.InputsMatch:
		return Decision{Issue: true, Why: InputsChanged}
	default:
		return Decision{Issue: true, Why: Due}
	}
}
