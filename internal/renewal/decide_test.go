package renewal

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	later := t0.Add(time.Minute)
	earlier := t0.Add(-time.Minute)
	tests := []struct {
		name      string
		in        Input
		wantIssue bool
		wantWhy   Why
		wantAfter time.Duration
	}{
		{name: "good and not due waits until renewal", in: Input{Now: t0, HaveToken: true, InputsMatch: true, RenewAt: later}, wantWhy: NotDue, wantAfter: time.Minute},
		{name: "due", in: Input{Now: t0, HaveToken: true, InputsMatch: true, RenewAt: earlier}, wantIssue: true, wantWhy: Due},
		{name: "exactly at renewal time is due", in: Input{Now: t0, HaveToken: true, InputsMatch: true, RenewAt: t0}, wantIssue: true, wantWhy: Due},
		{name: "no token", in: Input{Now: t0}, wantIssue: true, wantWhy: NoToken},
		{name: "inputs changed skips waiting for renewal", in: Input{Now: t0, HaveToken: true, RenewAt: later}, wantIssue: true, wantWhy: InputsChanged},
		{name: "backing off", in: Input{Now: t0, HaveToken: true, InputsMatch: true, RenewAt: earlier, RetryAt: &later}, wantWhy: BackingOff, wantAfter: time.Minute},
		{name: "backing off without a token", in: Input{Now: t0, RetryAt: &later}, wantWhy: BackingOff, wantAfter: time.Minute},
		{name: "spec change skips the backoff", in: Input{Now: t0, RetryAt: &later, SpecChanged: true}, wantIssue: true, wantWhy: NoToken},
		{name: "a request skips schedule and backoff", in: Input{Now: t0, HaveToken: true, InputsMatch: true, RenewAt: later, RetryAt: &later, Requested: true}, wantIssue: true, wantWhy: Requested},
		{name: "retry time passed", in: Input{Now: t0, HaveToken: true, InputsMatch: true, RenewAt: earlier, RetryAt: &earlier}, wantIssue: true, wantWhy: Due},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.in)
			if d.Issue != tt.wantIssue || d.Why != tt.wantWhy || d.RequeueAfter != tt.wantAfter {
				t.Errorf("Decide = %+v, want issue=%v why=%s after=%s", d, tt.wantIssue, tt.wantWhy, tt.wantAfter)
			}
		})
	}
}
