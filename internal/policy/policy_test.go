package policy

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func dur(d time.Duration) *time.Duration { return &d }

func TestRenewalTime(t *testing.T) {
	tests := []struct {
		name        string
		issued      time.Time
		lifetime    time.Duration
		renewBefore *time.Duration
		rnd         float64
		want        time.Time
		wantNote    bool
	}{
		{name: "default two thirds, no jitter", issued: t0, lifetime: 300 * time.Second, rnd: 0, want: t0.Add(200 * time.Second)},
		{name: "default with max jitter subtracts just under 10%", issued: t0, lifetime: 300 * time.Second, rnd: 0.999999, want: t0.Add(170 * time.Second)},
		{name: "default with half jitter", issued: t0, lifetime: 300 * time.Second, rnd: 0.5, want: t0.Add(185 * time.Second)},
		{name: "renewBefore", issued: t0, lifetime: 300 * time.Second, renewBefore: dur(60 * time.Second), rnd: 0, want: t0.Add(240 * time.Second)},
		{name: "renewBefore with jitter", issued: t0, lifetime: 300 * time.Second, renewBefore: dur(60 * time.Second), rnd: 0.5, want: t0.Add(225 * time.Second)},
		{name: "tiny renewBefore is held back by the floor", issued: t0, lifetime: 300 * time.Second, renewBefore: dur(time.Second), rnd: 0, want: t0.Add(295 * time.Second)},
		{name: "renewBefore not shorter than lifetime renews after a third", issued: t0, lifetime: 300 * time.Second, renewBefore: dur(10 * time.Minute), rnd: 0, want: t0.Add(100 * time.Second), wantNote: true},
		{name: "short lifetime floor shrinks to a tenth", issued: t0, lifetime: 12 * time.Second, renewBefore: dur(100 * time.Millisecond), rnd: 0, want: t0.Add(10 * time.Second)},
		{name: "truncated to whole seconds", issued: t0.Add(700 * time.Millisecond), lifetime: 300 * time.Second, rnd: 0, want: t0.Add(200 * time.Second)},
		{name: "zero lifetime renews now", issued: t0, lifetime: 0, want: t0, wantNote: true},
		{name: "out of range rnd means no jitter", issued: t0, lifetime: 300 * time.Second, rnd: 7, want: t0.Add(200 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RenewalTime(tt.issued, tt.issued.Add(tt.lifetime), tt.renewBefore, tt.rnd)
			if !got.RenewAt.Equal(tt.want) {
				t.Errorf("RenewAt = %s, want %s", got.RenewAt, tt.want)
			}
			if (got.Note != "") != tt.wantNote {
				t.Errorf("Note = %q, wantNote %v", got.Note, tt.wantNote)
			}
		})
	}
}

// Over many random draws the renewal time stays in [2/3 L - 10% L, 2/3 L], a whole second,
// and never later than expiry minus the floor.
func TestRenewalTimeJitterBounds(t *testing.T) {
	for _, lifetime := range []time.Duration{12 * time.Second, 30 * time.Second, 5 * time.Minute, 10 * time.Hour} {
		lo := t0.Add(time.Duration(float64(lifetime)*(DefaultFraction-JitterFraction)) - time.Second)
		hi := t0.Add(time.Duration(float64(lifetime) * DefaultFraction))
		seen := map[time.Time]bool{}
		for i := range 1000 {
			rnd := float64(i) / 1000
			got := RenewalTime(t0, t0.Add(lifetime), nil, rnd).RenewAt
			if got.Before(lo) || got.After(hi) {
				t.Fatalf("lifetime %s rnd %v: %s outside [%s, %s]", lifetime, rnd, got, lo, hi)
			}
			if got.Nanosecond() != 0 {
				t.Fatalf("not truncated: %s", got)
			}
			floor := min(ExpiryFloor, lifetime/10)
			if got.After(t0.Add(lifetime - floor)) {
				t.Fatalf("later than expiry minus floor: %s", got)
			}
			seen[got] = true
		}
		if lifetime >= 5*time.Minute && len(seen) < 10 {
			t.Errorf("lifetime %s: jitter produced only %d distinct times", lifetime, len(seen))
		}
	}
}

// FuzzRenewalTime: for any issue time, lifetime, renewBefore and random draw, the renewal time
// is a whole second, not before the issue time's second, and not after expiry.
func FuzzRenewalTime(f *testing.F) {
	f.Add(int64(1800000000), int64(300), int64(0), 0.5)
	f.Add(int64(1800000000), int64(12), int64(60000), 0.99)
	f.Add(int64(0), int64(-5), int64(-1), -1.0)
	f.Fuzz(func(t *testing.T, issuedUnix, lifetimeSec, renewBeforeMs int64, rnd float64) {
		if lifetimeSec > 1<<32 || lifetimeSec < -(1<<32) || issuedUnix > 1<<40 || issuedUnix < 0 || renewBeforeMs > 1<<40 || renewBeforeMs < -(1<<40) {
			return
		}
		issued := time.Unix(issuedUnix, 0)
		exp := issued.Add(time.Duration(lifetimeSec) * time.Second)
		var rb *time.Duration
		if renewBeforeMs != 0 {
			d := time.Duration(renewBeforeMs) * time.Millisecond
			rb = &d
		}
		s := RenewalTime(issued, exp, rb, rnd)
		if s.RenewAt.Nanosecond() != 0 {
			t.Fatalf("not truncated: %s", s.RenewAt)
		}
		if s.RenewAt.Before(issued.Truncate(time.Second)) {
			t.Fatalf("renewal %s before issue %s", s.RenewAt, issued)
		}
		if lifetimeSec > 0 && s.RenewAt.After(exp) {
			t.Fatalf("renewal %s after expiry %s", s.RenewAt, exp)
		}
	})
}
