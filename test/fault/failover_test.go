package fault

import (
	"strings"
	"testing"
	"time"
)

const acquiredLease = "acquired lease"

// Two operator processes with leader election; the leader is SIGKILLed while it redeems a
// refresh token, at two moments the proxy makes deterministic:
//   - before the grant reaches Keycloak (odd rounds): the chain must survive; the new leader finds
//     the redeeming marker, introspects, and redeems that same refresh token once;
//   - after Keycloak answered (even rounds): under strict rotation the new refresh token existed
//     only in the killed process, so that chain is lost; no operator can close this window. The
//     new leader must say so (RefreshTokenInvalid, "operator stopped while Keycloak rotated")
//     without posting the spent token again; the test bootstraps it again as a person would.
//
// Other refresh grants of the killed process that were in flight at the same instant can fall
// into the second window too; they are counted the same way. Any other broken chain, any double
// redemption and any invalid_grant answer fail the test.
func TestLeaderFailover(t *testing.T) {
	nRes := pick(20, 60)
	rounds := pick(2, 4)
	namespaces := mixedFleet(t, "failover", nRes)
	// Shorter lease timings than controller-runtime's 15 s / 10 s / 2 s: the takeover below
	// must then come well before the default lease would have expired.
	const lease, retry = 6 * time.Second, time.Second
	le := []string{"--leader-elect", "--leader-election-namespace=default",
		"--leader-elect-lease-duration=" + lease.String(), "--leader-elect-renew-deadline=4s", "--leader-elect-retry-period=" + retry.String()}
	a := startOperator(t, "a", namespaces, le...)
	leader := waitLeader(t, []*Operator{a}, time.Minute)
	b := startOperator(t, "b", namespaces, le...)
	procs := []*Operator{a, b}
	b.waitMetrics(t, time.Minute)
	waitAllReady(t, namespaces, nRes, 3*time.Minute)
	proxy.ResetCounts()
	lost := &lostChains{seen: map[string]bool{}}
	spare := 2
	for r := 1; r <= rounds; r++ {
		at, moment := HookThenDrop, "before the grant reached Keycloak"
		if r%2 == 0 {
			at, moment = HookOnAnswer, "after Keycloak rotated the refresh token"
		}
		lostBefore := lost.count()
		type kill struct {
			at     time.Time
			rtHash string
		}
		killed := make(chan kill, 1)
		l := leader
		proxy.OnNextRefresh(at, func(rtHash string) { l.Kill(); killed <- kill{time.Now(), rtHash} })
		var k kill
		select {
		case k = <-killed:
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
		takeover := time.Since(k.at)
		// Rotations resume: Keycloak issues a token again (only the new leader runs).
		var resumed time.Duration
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			g := proxy.Counts().GrantsOK
			if g["client_credentials"]+g["refresh_token"] > grantsAtKill["client_credentials"]+grantsAtKill["refresh_token"] {
				resumed = time.Since(k.at)
				break
			}
		}
		healed := waitAllReadyFixing(t, namespaces, nRes, 2*time.Minute, lost.rebootstrap(t))
		if resumed == 0 {
			t.Errorf("no rotation within a minute of the takeover")
		}
		// Not a speed target: a takeover after 15 s would mean the lease flags were ignored.
		if takeover >= 15*time.Second {
			t.Errorf("takeover after %s with --leader-elect-lease-duration=%s: the lease flags did not take effect", fmtDur(takeover), lease)
		}
		switch at {
		case HookThenDrop:
			// The interrupted refresh token is still good: the new leader redeems it, once.
			until(t, time.Minute, "the new leader redeems the refresh token the killed leader never sent", func() bool {
				return proxy.RefreshOK(k.rtHash) > 0
			})
			if n := proxy.RefreshOK(k.rtHash); n != 1 {
				t.Errorf("round %d: the interrupted refresh token was redeemed %d times, want 1", r, n)
			}
		case HookOnAnswer:
			if proxy.RefreshOK(k.rtHash) != 1 {
				t.Errorf("round %d: Keycloak answered the killed leader's refresh grant with an error; the round proves nothing", r)
			}
			// The new leader finds out at that resource's next renewal (the Secret still holds a
			// valid token until then).
			fix := lost.rebootstrap(t)
			until(t, time.Minute, "a resource reports the chain lost in the crash window", func() bool {
				fix(listTokens(t, namespaces))
				return lost.count() > lostBefore
			})
			reported := time.Since(k.at)
			healed = waitAllReadyFixing(t, namespaces, nRes, 2*time.Minute, fix)
			t.Logf("round %d: the lost chain %v reported %s after the kill; bootstrapped again by the test", r, lost.which[lostBefore:], fmtDur(reported))
		}
		t.Logf("FIGURE failover round %d: killed %s %s; takeover (new leader's log says %q) after %s; first token issued after %s; all Ready %s later; chains lost in the crash window this round: %d",
			r, l.Name, moment, acquiredLease, fmtDur(takeover), fmtDur(resumed), fmtDur(healed), lost.count()-lostBefore)
		if r < rounds {
			// A new standby replaces the killed process.
			procs = append(procs, startOperator(t, "spare-"+string(rune('0'+spare)), namespaces, le...))
			spare++
		}
	}
	time.Sleep(tokenLifespan)
	waitAllReadyFixing(t, namespaces, nRes, 2*time.Minute, lost.rebootstrap(t))
	c := proxy.Counts()
	alive, broken, why := chainsAlive(t, namespaces)
	t.Logf("FIGURE failover: resources=%d rounds=%d double_redemptions=%d refresh_tokens_posted_twice=%d refresh_invalid_grant=%d chains_alive=%d chains_broken=%d lost_in_crash_window=%d %v",
		nRes, rounds, c.DoubleRedemptions, c.RefreshTokensPostedTwice, c.RefreshInvalidGrant, alive, broken, lost.count(), lost.which)
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
