package fault

import (
	"strings"
	"testing"
	"time"
)

const acquiredLease = "acquired lease"

// Two operator processes with leader election; the leader is SIGKILLed while it redeems a
// refresh token. The other takes over, rotations resume, and no refresh token is redeemed twice.
func TestLeaderFailover(t *testing.T) {
	nRes := pick(20, 60)
	rounds := pick(1, 3)
	namespaces := mixedFleet(t, "failover", nRes)
	le := []string{"--leader-elect", "--leader-election-namespace=default"}
	a := startOperator(t, "a", namespaces, le...)
	leader := waitLeader(t, []*Operator{a}, time.Minute)
	b := startOperator(t, "b", namespaces, le...)
	procs := []*Operator{a, b}
	b.waitMetrics(t, time.Minute)
	waitAllReady(t, namespaces, nRes, 3*time.Minute)
	proxy.ResetCounts()
	spare := 2
	for r := 1; r <= rounds; r++ {
		// Kill the leader the moment it sends a refresh grant: the redeeming marker is written,
		// the request is on the wire.
		killed := make(chan time.Time, 1)
		l := leader
		proxy.OnNextRefresh(func() { l.Kill(); killed <- time.Now() })
		var killedAt time.Time
		select {
		case killedAt = <-killed:
		case <-time.After(2 * time.Minute):
			t.Fatal("no refresh grant within 2 minutes")
		}
		grantsAtKill := proxy.Counts().GrantsOK
		var others []*Operator
		for _, p := range procs {
			if p != l && p.Alive() {
				others = append(others, p)
			}
		}
		leader = waitLeader(t, others, 2*time.Minute)
		takeover := time.Since(killedAt)
		// Rotations resume: Keycloak issues a token again (only the new leader runs).
		var resumed time.Duration
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			g := proxy.Counts().GrantsOK
			if g["client_credentials"]+g["refresh_token"] > grantsAtKill["client_credentials"]+grantsAtKill["refresh_token"] {
				resumed = time.Since(killedAt)
				break
			}
		}
		healed := waitAllReady(t, namespaces, nRes, 2*time.Minute)
		t.Logf("FIGURE failover round %d: killed %s; takeover (new leader's log says %q) after %s; first token issued after %s; all Ready %s later",
			r, l.Name, acquiredLease, fmtDur(takeover), fmtDur(resumed), fmtDur(healed))
		if resumed == 0 {
			t.Errorf("no rotation within a minute of the takeover")
		}
		if r < rounds {
			// A new standby replaces the killed process.
			procs = append(procs, startOperator(t, "spare-"+string(rune('0'+spare)), namespaces, le...))
			spare++
		}
	}
	time.Sleep(tokenLifespan)
	waitAllReady(t, namespaces, nRes, 2*time.Minute)
	c := proxy.Counts()
	alive, broken, why := chainsAlive(t, namespaces)
	t.Logf("FIGURE failover: resources=%d rounds=%d double_redemptions=%d refresh_tokens_posted_twice=%d refresh_invalid_grant=%d chains_alive=%d chains_broken=%d",
		nRes, rounds, c.DoubleRedemptions, c.RefreshTokensPostedTwice, c.RefreshInvalidGrant, alive, broken)
	if c.DoubleRedemptions != 0 || c.RefreshInvalidGrant != 0 {
		t.Errorf("%d double redemptions, %d invalid_grant answers", c.DoubleRedemptions, c.RefreshInvalidGrant)
	}
	if broken != 0 {
		t.Errorf("%d chains broken: %v", broken, why)
	}
}

// waitLeader waits until one of the processes logs that it acquired the lease.
func waitLeader(t *testing.T, candidates []*Operator, timeout time.Duration) *Operator {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, o := range candidates {
			if strings.Contains(strings.ToLower(o.Logs()), acquiredLease) {
				return o
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process acquired the lease within %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
