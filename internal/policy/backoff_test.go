package policy

import (
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 2 * time.Second, Max: time.Minute}
	far := t0.Add(time.Hour)
	tests := []struct {
		failures int32
		exp      *time.Time
		rnd      float64
		want     time.Duration
	}{
		{failures: 0, want: 2 * time.Second},
		{failures: 1, want: 2 * time.Second},
		{failures: 2, want: 4 * time.Second},
		{failures: 5, want: 32 * time.Second},
		{failures: 6, want: time.Minute},
		{failures: 1000, want: time.Minute},
		{failures: 6, exp: &far, want: time.Minute},
		{failures: 3, rnd: 0.999, want: 6 * time.Second}, // 8s * (1 - 0.25*0.999) = 6.0s, truncated
	}
	for _, tt := range tests {
		if got := b.Delay(tt.failures, t0, tt.exp, tt.rnd); got != tt.want {
			t.Errorf("Delay(%d, rnd %v) = %s, want %s", tt.failures, tt.rnd, got, tt.want)
		}
	}
}

// The cap keeps several retries inside the remaining life of a still-valid token.
func TestBackoffCappedByRemainingLifetime(t *testing.T) {
	b := Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute}
	clk := clocktesting.NewFakeClock(t0)
	exp := t0.Add(40 * time.Second)
	attempts := 0
	for f := int32(1); clk.Now().Before(exp); f++ {
		d := b.Delay(f, clk.Now(), &exp, 0.5)
		if d < MinRetry {
			t.Fatalf("delay %s below the minimum", d)
		}
		clk.Step(d)
		attempts++
	}
	if attempts < 4 {
		t.Errorf("only %d attempts before expiry, want at least 4", attempts)
	}
	if d := b.Delay(3, t0, &exp, 0); d > 10*time.Second {
		t.Errorf("delay %s exceeds a quarter of the remaining 40s", d)
	}
}

// RetryAt is computed from the failure record alone: the same record always gives the same time,
// whenever and however often it is computed, and different resources spread out.
func TestRetryAtIsDeterministicAndSpread(t *testing.T) {
	b := Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute}
	f := Failure{At: t0, Count: 4, Generation: 1}
	first := b.RetryAt(f, nil, "uid-1")
	for range 5 {
		if got := b.RetryAt(f, nil, "uid-1"); !got.Equal(first) {
			t.Fatalf("RetryAt changed between calls: %s then %s", first, got)
		}
	}
	// 4 failures: 16 s, jittered into [12 s, 16 s].
	if d := first.Sub(t0); d < 12*time.Second || d > 16*time.Second {
		t.Errorf("retry after %s, want within [12s, 16s]", d)
	}
	seen := map[time.Time]bool{}
	for i := range 50 {
		seen[b.RetryAt(f, nil, "uid-"+string(rune('a'+i)))] = true
	}
	if len(seen) < 3 {
		t.Errorf("50 resources failing together retry at only %d distinct times", len(seen))
	}
}

// A token that was still valid when the attempt failed caps the delay at a quarter of its
// remaining life then; one that had already expired does not.
func TestRetryAtCappedByTheTokenValidAtTheFailure(t *testing.T) {
	b := Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute}
	f := Failure{At: t0, Count: 10}
	exp := t0.Add(40 * time.Second)
	if d := b.RetryAt(f, &exp, "u").Sub(t0); d > 10*time.Second {
		t.Errorf("retry after %s with 40 s of token life left, want ≤ 10 s", d)
	}
	expired := t0.Add(-time.Second)
	if d := b.RetryAt(f, &expired, "u").Sub(t0); d < 3*time.Minute {
		t.Errorf("retry after %s with an expired token, want the uncapped ≥ 3m45s", d)
	}
}

func TestJitterRange(t *testing.T) {
	for i := range 10000 {
		j := Jitter("x", string(rune(i)))
		if j < 0 || j >= 1 {
			t.Fatalf("Jitter = %v outside [0,1)", j)
		}
	}
	if Jitter("a", "b") == Jitter("ab") {
		t.Error("the parts are not separated: (a, b) and (ab) collide")
	}
}

// Without a valid token, a failure that can pass on its own is retried at least every
// MaxTransient, so a resource recovers soon after Keycloak is back; a failure only a change can
// fix backs off to Max.
func TestRetryAtWithoutAValidToken(t *testing.T) {
	b := Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute, MaxTransient: 30 * time.Second}
	transient := Failure{At: t0, Count: 12, Transient: true}
	if d := b.RetryAt(transient, nil, "u").Sub(t0); d > 30*time.Second || d < 22*time.Second {
		t.Errorf("transient, no token: retry after %s, want within [22.5 s, 30 s]", d)
	}
	permanent := Failure{At: t0, Count: 12}
	if d := b.RetryAt(permanent, nil, "u").Sub(t0); d < 3*time.Minute {
		t.Errorf("permanent, no token: retry after %s, want the backoff's maximum", d)
	}
	exp := t0.Add(time.Hour)
	if d := b.RetryAt(transient, &exp, "u").Sub(t0); d < 3*time.Minute {
		t.Errorf("transient with an hour of token left: retry after %s, want the backoff's maximum (the token is fine)", d)
	}
}
