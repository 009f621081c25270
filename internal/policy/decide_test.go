package policy

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	b := Backoff{Initial: 2 * time.Second, Max: time.Minute}
	// A 300 s token issued at t0: renewal between 170 s and 200 s after issue.
	fresh := &Token{IssuedAt: t0, ExpiresAt: t0.Add(300 * time.Second), InputsMatch: true}
	renewAt := Schedule("uid", *fresh, nil).RenewAt
	afterRenewal := renewAt.Add(time.Second)
	failed := &Failure{At: afterRenewal, Count: 3, Generation: 1} // 8 s → retry in [6 s, 8 s]
	retryAt := b.RetryAt(*failed, &fresh.ExpiresAt, "uid")

	tests := []struct {
		name      string
		in        Input
		wantIssue bool
		wantWhy   Why
		wantNext  time.Time
	}{
		{name: "good and not due waits until renewal", in: Input{Now: t0.Add(time.Minute), Token: fresh}, wantWhy: NotDue, wantNext: renewAt},
		{name: "due", in: Input{Now: afterRenewal, Token: fresh}, wantIssue: true, wantWhy: Due},
		{name: "exactly at renewal time is due", in: Input{Now: renewAt, Token: fresh}, wantIssue: true, wantWhy: Due},
		{name: "no token", in: Input{Now: t0}, wantIssue: true, wantWhy: NoToken},
		{name: "inputs changed skips waiting for renewal", in: Input{Now: t0.Add(time.Minute), Token: &Token{IssuedAt: t0, ExpiresAt: t0.Add(300 * time.Second)}}, wantIssue: true, wantWhy: InputsChanged},
		{name: "backing off after a failed renewal", in: Input{Now: afterRenewal.Add(time.Second), Token: fresh, Failure: failed, Generation: 1}, wantWhy: BackingOff, wantNext: retryAt},
		{name: "backing off without a token", in: Input{Now: t0.Add(500 * time.Millisecond), Failure: &Failure{At: t0, Count: 1, Generation: 1}, Generation: 1}, wantWhy: BackingOff, wantNext: t0.Add(time.Second)},
		{name: "spec change skips the backoff", in: Input{Now: t0.Add(time.Second), Failure: &Failure{At: t0, Count: 1, Generation: 1}, Generation: 2}, wantIssue: true, wantWhy: NoToken},
		{name: "a request skips schedule and backoff", in: Input{Now: t0.Add(time.Minute), Token: fresh, Failure: failed, Generation: 1, Requested: true}, wantIssue: true, wantWhy: Requested},
		{name: "retry time passed", in: Input{Now: retryAt, Token: fresh, Failure: failed, Generation: 1}, wantIssue: true, wantWhy: Due},
		{name: "an expired token is looked at again at its expiry at the latest", in: Input{Now: t0.Add(299*time.Second + 500*time.Millisecond), Token: fresh, Failure: &Failure{At: t0.Add(299 * time.Second), Count: 9, Generation: 1}, Generation: 1}, wantWhy: BackingOff, wantNext: fresh.ExpiresAt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Seed, tt.in.Backoff = "uid", b
			d := Decide(tt.in)
			if d.Issue != tt.wantIssue || d.Why != tt.wantWhy || (!tt.wantIssue && !d.Next.Equal(tt.wantNext)) {
				t.Errorf("Decide = %+v, want issue=%v why=%s next=%s", d, tt.wantIssue, tt.wantWhy, tt.wantNext)
			}
		})
	}
}

// The bug this package's design removes: while a resource backs off after a failed renewal, a
// reconcile for an unrelated reason (an annotation, an edit of the Secret, a resync) used to
// rewrite the stored retry time back to the token's past renewal time, so the next reconcile
// called Keycloak at once. Here nothing is stored: every reconcile during the backoff computes
// the same retry time from the failure record, however many run.
func TestBackoffHoldsAcrossInterleavedReconciles(t *testing.T) {
	b := Backoff{Initial: 2 * time.Second, Max: time.Minute}
	tok := &Token{IssuedAt: t0, ExpiresAt: t0.Add(300 * time.Second), InputsMatch: true}
	fail := &Failure{At: Schedule("u", *tok, nil).RenewAt.Add(time.Second), Count: 5, Generation: 3}
	var want time.Time
	for i := range 20 {
		now := fail.At.Add(time.Duration(i) * 500 * time.Millisecond)
		d := Decide(Input{Now: now, Seed: "u", Token: tok, Failure: fail, Generation: 3, Backoff: b})
		if i == 0 {
			want = d.RetryAt
		}
		if !d.RetryAt.Equal(want) {
			t.Fatalf("reconcile %d computed retry %s, the first computed %s", i, d.RetryAt, want)
		}
		if d.Issue != !now.Before(want) {
			t.Fatalf("reconcile %d at %s: issue=%v with retry at %s", i, now, d.Issue, want)
		}
	}
	if want.Sub(fail.At) < 20*time.Second {
		t.Errorf("5 failures retried after %s, want the backoff of ≥ 24 s", want.Sub(fail.At))
	}
}

// spec.renewBefore takes effect at once: the renewal time is computed from the token's facts and
// the current spec, not stored at issue time.
func TestRenewBeforeChangeAppliesAtOnce(t *testing.T) {
	tok := &Token{IssuedAt: t0, ExpiresAt: t0.Add(300 * time.Second), InputsMatch: true}
	now := t0.Add(100 * time.Second)
	if d := Decide(Input{Now: now, Seed: "u", Token: tok}); d.Issue {
		t.Fatalf("default schedule: due at 100 s of 300 s: %+v", d)
	}
	long := 250 * time.Second // renew 250 s before expiry: at 50 s (minus jitter)
	d := Decide(Input{Now: now, Seed: "u", Token: tok, RenewBefore: &long})
	if !d.Issue || d.Why != Due {
		t.Errorf("after renewBefore=250s at 100 s of 300 s: %+v, want due at once", d)
	}
	short := 10 * time.Second
	d = Decide(Input{Now: now, Seed: "u", Token: tok, RenewBefore: &short})
	if d.Issue || d.RenewAt.Before(t0.Add(260*time.Second)) {
		t.Errorf("after renewBefore=10s: %+v, want a renewal at ≥ 260 s", d)
	}
}

// The jitter of a token's schedule is a function of the resource and the token: computed again
// (another reconcile, a restart, another replica) it gives the same time.
func TestScheduleIsDeterministicPerToken(t *testing.T) {
	tok := Token{IssuedAt: t0, ExpiresAt: t0.Add(300 * time.Second)}
	a, b := Schedule("uid-1", tok, nil), Schedule("uid-1", tok, nil)
	if !a.RenewAt.Equal(b.RenewAt) {
		t.Fatalf("same token, two schedules: %s and %s", a.RenewAt, b.RenewAt)
	}
	seen := map[time.Time]bool{}
	for i := range 100 {
		seen[Schedule("uid-"+string(rune('A'+i)), tok, nil).RenewAt] = true
	}
	if len(seen) < 10 {
		t.Errorf("100 resources issued together renew at only %d distinct seconds", len(seen))
	}
}
