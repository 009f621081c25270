package policy

import (
	"testing"
	"time"
)

func TestNextChainStep(t *testing.T) {
	timeout := 15 * time.Second
	tests := []struct {
		name string
		in   ChainInput
		want ChainStep
	}{
		{name: "a live chain is redeemed", in: ChainInput{HasRefreshToken: true}, want: StepRedeem},
		{name: "a redemption started a moment ago may be in flight", in: ChainInput{HasRefreshToken: true, MarkerSince: t0.Add(-5 * time.Second), MarkerIsCurrent: true}, want: StepWait},
		{name: "an interrupted redemption of the current token is checked first", in: ChainInput{HasRefreshToken: true, MarkerSince: t0.Add(-time.Minute), MarkerIsCurrent: true}, want: StepCheckInterrupted},
		{name: "a stale marker of an older token is ignored", in: ChainInput{HasRefreshToken: true, MarkerSince: t0.Add(-time.Minute)}, want: StepRedeem},
		{name: "an ended RefreshToken chain needs a person", in: ChainInput{Ended: true}, want: StepNeedBootstrap},
		{name: "an ended Password chain logs in again", in: ChainInput{Ended: true, Password: true}, want: StepLogin},
		{name: "a Password grant without a chain logs in", in: ChainInput{Password: true}, want: StepLogin},
		{name: "an ended chain with a marker is not checked", in: ChainInput{Ended: true, HasRefreshToken: true, MarkerSince: t0.Add(-time.Minute), MarkerIsCurrent: true}, want: StepNeedBootstrap},
		{name: "even an ended chain waits while a redemption may be in flight", in: ChainInput{Ended: true, Password: true, MarkerSince: t0.Add(-time.Second)}, want: StepWait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Now, tt.in.RequestTimeout = t0, timeout
			if got := NextChainStep(tt.in); got != tt.want {
				t.Errorf("NextChainStep = %s, want %s", got, tt.want)
			}
		})
	}
	if AfterRejectedRefresh(true) != StepLogin || AfterRejectedRefresh(false) != StepNeedBootstrap {
		t.Error("AfterRejectedRefresh: Password logs in again, RefreshToken needs a person")
	}
}

func TestChainEnd(t *testing.T) {
	idle := 30 * 24 * time.Hour
	if got := ChainEnd(t0, 1800*time.Second, false, idle); !got.Equal(t0.Add(30 * time.Minute)) {
		t.Errorf("refresh_expires_in 1800: %s", got)
	}
	if got := ChainEnd(t0, 0, true, idle); !got.Equal(t0.Add(idle)) {
		t.Errorf("offline without maximum: %s, want the idle timeout", got)
	}
	if got := ChainEnd(t0, 0, false, idle); !got.IsZero() {
		t.Errorf("online without refresh_expires_in: %s, want unknown", got)
	}
	if !ChainExpiring(t0, t0.Add(time.Hour), 72*time.Hour) || ChainExpiring(t0, t0.Add(100*time.Hour), 72*time.Hour) || ChainExpiring(t0, time.Time{}, 72*time.Hour) {
		t.Error("ChainExpiring")
	}
}

func TestRevocation(t *testing.T) {
	b := Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute}
	in := RevocationInput{Now: t0.Add(10 * time.Second), Requested: t0, Timeout: time.Minute, Seed: "u", Backoff: b}
	if d := Revocation(in); d.GiveUp || !d.RetryAt.IsZero() || !d.Deadline.Equal(t0.Add(time.Minute)) {
		t.Errorf("no failure yet: %+v", d)
	}
	in.Failure = &Failure{At: t0.Add(10 * time.Second), Count: 20}
	d := Revocation(in)
	if d.GiveUp || d.RetryAt.Sub(in.Failure.At) > 13*time.Second || !d.RetryAt.After(in.Failure.At) {
		t.Errorf("20 failures, 50 s before the deadline: %+v, want a retry within a quarter of the time left", d)
	}
	in.Now = t0.Add(time.Minute)
	if d := Revocation(in); !d.GiveUp {
		t.Errorf("at the deadline: %+v, want give up", d)
	}
}
