package policy

import "time"

// RevocationInput are the facts of a deletion that waits for revocation.
type RevocationInput struct {
	Now time.Time
	// Requested is when the deletion was requested (the deletion timestamp).
	Requested time.Time
	// Timeout is how long revocation is retried before the deletion finishes without it.
	Timeout time.Duration
	// Failure is the record of failed revocation attempts (nil: none failed yet).
	Failure *Failure
	// Seed identifies the resource (its UID).
	Seed    string
	Backoff Backoff
}

// RevocationDecision says whether to keep waiting for revocation, and until when.
type RevocationDecision struct {
	// GiveUp: the deadline passed; finish the deletion without revocation.
	GiveUp bool
	// Deadline is when revocation is given up.
	Deadline time.Time
	// RetryAt is when to try again (zero when GiveUp or when nothing failed yet).
	RetryAt time.Time
}

// Revocation decides how a deletion goes on after failed revocation attempts: retry with backoff,
// capped so that several retries fit before the deadline, and give up at the deadline, because a
// resource stuck in Terminating forever is worse than a token that expires on its own.
func Revocation(in RevocationInput) RevocationDecision {
	d := RevocationDecision{Deadline: in.Requested.Add(in.Timeout)}
	if !in.Now.Before(d.Deadline) {
		d.GiveUp = true
		return d
	}
	if in.Failure != nil {
		d.RetryAt = in.Backoff.RetryAt(*in.Failure, &d.Deadline, in.Seed)
		if d.RetryAt.After(d.Deadline) {
			d.RetryAt = d.Deadline
		}
	}
	return d
}

// SupersededRevokeAt is when a token that a rotation at rotatedAt replaced is revoked: after
// grace, the time its consumers may need to receive the new one. revoke is false when the token
// expires by then anyway (revoking it would change nothing).
func SupersededRevokeAt(rotatedAt, expiresAt time.Time, grace time.Duration) (at time.Time, revoke bool) {
	at = rotatedAt.Add(max(grace, 0)).Truncate(time.Second)
	return at, at.Before(expiresAt)
}
