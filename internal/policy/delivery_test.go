package policy

import (
	"testing"
	"time"
)

func TestDeliveryNeed(t *testing.T) {
	for _, tt := range []struct {
		d    Delivery
		want time.Duration
	}{
		{Delivery{}, 90 * time.Second}, // the kubelet's default syncFrequency, 1.5 × 1m
		{Delivery{KubeletSyncFrequency: 10 * time.Second}, 15 * time.Second},
		{Delivery{NudgedPods: 3, NudgeQPS: 20}, 5 * time.Second},                                  // 0.15 s of rate limit rounds away
		{Delivery{NudgedPods: 200, NudgeQPS: 20}, 15 * time.Second},                               // the last pod waits 10 s for its token
		{Delivery{NudgedPods: 200}, 5 * time.Second},                                              // no rate limit
		{Delivery{KubeletSyncFrequency: time.Hour, NudgedPods: 1, NudgeQPS: 20}, 5 * time.Second}, // nudged pods do not wait for the sync
	} {
		if got := tt.d.Need(); got != tt.want {
			t.Errorf("%+v: Need() = %s, want %s", tt.d, got, tt.want)
		}
	}
}

// The margin is the least time between renewal and expiry: the jitter only renews earlier.
func TestMarginIsTheLeastOverJitter(t *testing.T) {
	issued := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	rb := 30 * time.Second
	for _, life := range []time.Duration{12 * time.Second, 20 * time.Second, time.Minute, 5 * time.Minute, time.Hour} {
		for _, renewBefore := range []*time.Duration{nil, &rb} {
			m := Margin(life, renewBefore)
			for i := range 200 {
				plan := RenewalTime(issued, issued.Add(life), renewBefore, float64(i)/200)
				if got := issued.Add(life).Sub(plan.RenewAt); got < m {
					t.Fatalf("lifetime %s, renewBefore %v, jitter %d/200: margin %s below Margin() = %s", life, renewBefore, i, got, m)
				}
			}
		}
	}
	if got := Margin(5*time.Minute, nil); got != 100*time.Second {
		t.Errorf("Margin(5m) = %s, want 1m40s (renewal at two thirds)", got)
	}
	if got := Margin(5*time.Minute, &rb); got != rb {
		t.Errorf("Margin(5m, renewBefore 30s) = %s, want 30s", got)
	}
}

// The figures of docs/consuming-tokens.md ("How short may tokens be?"); a change of the policy
// that moves them must update the table there.
func TestMinSafeLifetimeTable(t *testing.T) {
	for _, tt := range []struct {
		name string
		d    Delivery
		want time.Duration
	}{
		{"kubelet default (syncFrequency 1m), not nudged", Delivery{}, 4*time.Minute + 28*time.Second},
		{"kubelet syncFrequency 10s, not nudged", Delivery{KubeletSyncFrequency: 10 * time.Second}, 43 * time.Second},
		{"nudged, up to 50 pods", Delivery{NudgedPods: 50, NudgeQPS: 20}, 22 * time.Second},
		{"nudged, up to 10 pods", Delivery{NudgedPods: 10, NudgeQPS: 20}, 16 * time.Second},
		{"nudged, 1 pod", Delivery{NudgedPods: 1, NudgeQPS: 20}, 13 * time.Second},
	} {
		need := tt.d.Need()
		got := MinSafeLifetime(need)
		t.Logf("%-48s need %-6s min lifetime %s", tt.name, need, got)
		if got != tt.want {
			t.Errorf("%s: MinSafeLifetime(%s) = %s, want %s", tt.name, need, got, tt.want)
		}
		if Margin(got, nil) < need || Margin(got-time.Second, nil) >= need {
			t.Errorf("%s: %s is not the shortest lifetime whose margin covers %s", tt.name, got, need)
		}
	}
}

func TestCheckDelivery(t *testing.T) {
	rb := 2 * time.Minute
	for _, tt := range []struct {
		life        time.Duration
		renewBefore *time.Duration
		d           Delivery
		atRisk      bool
	}{
		{5 * time.Minute, nil, Delivery{}, false}, // 100 s margin, 90 s need
		{time.Minute, nil, Delivery{}, true},      // 20 s margin
		{time.Minute, nil, Delivery{NudgedPods: 3, NudgeQPS: 20}, false},
		{20 * time.Second, nil, Delivery{NudgedPods: 3, NudgeQPS: 20}, false}, // 7 s margin, 5 s need
		{12 * time.Second, nil, Delivery{NudgedPods: 3, NudgeQPS: 20}, true},  // 4 s margin
		{10 * time.Minute, &rb, Delivery{}, false},
		{10 * time.Minute, ptr(30 * time.Second), Delivery{}, true},
	} {
		c := CheckDelivery(tt.life, tt.renewBefore, tt.d)
		if c.AtRisk != tt.atRisk {
			t.Errorf("lifetime %s, renewBefore %v, %+v: %+v, want at risk %v", tt.life, tt.renewBefore, tt.d, c, tt.atRisk)
		}
	}
}

func ptr[T any](v T) *T { return &v }
