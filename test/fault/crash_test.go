package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// mixedFleet creates n resources, alternately ClientCredentials (realm mlflow) and RefreshToken
// (realm strict, bootstrapped with a password grant), ten per namespace.
func mixedFleet(t *testing.T, prefix string, n int) []string {
	t.Helper()
	var namespaces []string
	for i := 0; i < n; i++ {
		if i%10 == 0 {
			namespaces = append(namespaces, newNamespace(t, prefix))
		}
		ns := namespaces[len(namespaces)-1]
		if i%2 == 0 {
			create(t, ccToken(ns, fmt.Sprintf("cc-%03d", i)))
		} else {
			create(t, rtToken(t, ns, fmt.Sprintf("rt-%03d", i), i/2))
		}
	}
	return namespaces
}

// lostChainEvents counts the operator's "the chain is lost" Warning events: a redemption that
// Keycloak completed but the killed operator never saved (see controllers/refresh.go).
func lostChainEvents(t *testing.T, namespaces []string) (int, []string) {
	t.Helper()
	n := 0
	var which []string
	for _, ns := range namespaces {
		var l corev1.EventList
		if err := listRetry(&l, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, e := range l.Items {
			if e.Reason == authv1alpha1.ReasonRefreshTokenInvalid && strings.Contains(e.Message, "operator stopped") {
				n++
				which = append(which, ns+"/"+e.InvolvedObject.Name)
			}
		}
	}
	return n, which
}

// The operator process SIGKILLed at random moments while a mixed fleet rotates, and restarted
// at once: every resource is Ready again after each restart, no refresh chain is broken, no
// refresh token is redeemed twice, and tokens are not issued before they are due.
func TestOperatorCrash(t *testing.T) {
	nRes := pick(40, 100)
	kills := pick(5, 20)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 42))
	t.Logf("%d resources, %d kills, seed %d", nRes, kills, seed)
	namespaces := mixedFleet(t, "crash", nRes)

	op := startOperator(t, "op-0", namespaces)
	op.waitMetrics(t, time.Minute)
	took := waitAllReady(t, namespaces, nRes, 3*time.Minute)
	t.Logf("%d resources Ready %s after the operator started", nRes, fmtDur(took))
	w := watchSecrets(t, namespaces, 500*time.Millisecond)
	time.Sleep(tokenLifespan / 2)
	proxy.ResetCounts()
	_, _, tokensBefore, _, _ := w.Snapshot()
	started := time.Now()

	var readyTimes []time.Duration
	lost := &lostChains{seen: map[string]bool{}}
	for k := 1; k <= kills; k++ {
		wait := time.Duration(500+rng.IntN(7500)) * time.Millisecond
		time.Sleep(wait)
		op.Kill()
		killedAt := time.Now()
		_ = killedAt
		op = startOperator(t, fmt.Sprintf("op-%d", k), namespaces)
		// Ready as seen by the new process: it has reconciled every resource and found (or
		// made) a valid token; its mlflow_token_ready series are all 1.
		newReady := waitProcessReady(t, op, namespaces, nRes, 2*time.Minute, lost.rebootstrap(t))
		waitAllReadyFixing(t, namespaces, nRes, 2*time.Minute, lost.rebootstrap(t))
		readyTimes = append(readyTimes, newReady)
		t.Logf("kill %d after %s of running: the restarted process reports all %d Ready %s after its start; API view all Ready %s after the kill",
			k, fmtDur(wait), nRes, fmtDur(newReady), fmtDur(time.Since(killedAt)))
	}
	// One more token lifetime with the last process: rotations continue.
	time.Sleep(tokenLifespan + 2*time.Second)
	waitAllReadyFixing(t, namespaces, nRes, 2*time.Minute, lost.rebootstrap(t))
	w.Stop()
	elapsed := time.Since(started)
	c := proxy.Counts()
	blanked, deleted, tokens, notDue, _ := w.Snapshot()
	tokens -= tokensBefore
	w.mu.Lock()
	regressions := w.Regressions
	w.mu.Unlock()
	alive, broken, why := chainsAlive(t, namespaces)
	lostEvents, _ := lostChainEvents(t, namespaces)

	sorted := append([]time.Duration(nil), readyTimes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	issued := c.GrantsOK["client_credentials"] + c.GrantsOK["refresh_token"] + c.GrantsOK["password"]
	t.Logf("FIGURE crash: resources=%d kills=%d duration=%s ready_after_restart_median=%s max=%s all=%v "+
		"chains_alive=%d chains_broken=%d lost_in_crash_window=%d double_redemptions=%d refresh_tokens_posted_twice=%d refresh_invalid_grant=%d "+
		"tokens_issued_by_keycloak=%d tokens_published=%d issued_not_published=%d published_before_due=%d secret_went_back_to_older_token=%d secrets_blanked=%d secrets_deleted=%d introspections=%d",
		nRes, kills, fmtDur(elapsed), fmtDur(sorted[len(sorted)/2]), fmtDur(sorted[len(sorted)-1]), roundAll(readyTimes),
		alive, broken, lost.count(), c.DoubleRedemptions, c.RefreshTokensPostedTwice, c.RefreshInvalidGrant,
		issued, tokens, issued-tokens, notDue, regressions, blanked, deleted, countSuffix(c.Paths, "/token/introspect"))
	t.Logf("chains lost in the crash window (re-bootstrapped by the test, as a person would): %v; the operator's Warning events saying so: %d", lost.which, lostEvents)
	if broken != 0 {
		t.Errorf("%d refresh chains broken at the end: %v", broken, why)
	}
	// A chain lost otherwise than in the crash window (the operator's own message says which)
	// fails the test in rebootstrap.
	if c.DoubleRedemptions != 0 || c.RefreshInvalidGrant != 0 {
		t.Errorf("%d double redemptions, %d invalid_grant answers to refresh grants", c.DoubleRedemptions, c.RefreshInvalidGrant)
	}
	if blanked != 0 || deleted != 0 {
		t.Errorf("%d Secrets blanked, %d deleted", blanked, deleted)
	}
	if regressions != 0 {
		t.Errorf("%d Secrets went back to an older token", regressions)
	}
	if notDue != 0 {
		w.mu.Lock()
		t.Errorf("%d tokens published before the previous one was due: %v", notDue, w.NotDueLog)
		w.mu.Unlock()
	}
}

func roundAll(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = fmtDur(d)
	}
	return out
}

func countSuffix(m map[string]int, suffix string) int {
	n := 0
	for k, v := range m {
		if strings.HasSuffix(k, suffix) {
			n += v
		}
	}
	return n
}

// waitProcessReady waits until the process's /metrics reports every resource with
// mlflow_token_ready 1 (less those whose chain was just lost in the crash window; fix
// re-bootstraps them) and returns the time since the call.
func waitProcessReady(t *testing.T, op *Operator, namespaces []string, n int, timeout time.Duration, fix func([]authv1alpha1.MLflowAccessToken)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		items := listTokens(t, namespaces)
		fix(items)
		want := n
		for i := range items {
			if c := cond(&items[i], authv1alpha1.ConditionRenewalFailing); c != nil && c.Reason == authv1alpha1.ReasonRefreshTokenInvalid && c.Status == "True" {
				want--
			}
		}
		if m, err := op.Metrics(); err == nil {
			ready := 0
			for k, v := range m {
				if strings.HasPrefix(k, "mlflow_token_ready{") && v == 1 {
					ready++
				}
			}
			if ready >= want {
				return time.Since(start)
			}
		}
		if !op.Alive() {
			t.Fatalf("operator %s exited:\n%s", op.Name, tail(op.Logs(), 30))
		}
		if time.Since(start) > timeout {
			t.Fatalf("operator %s: not all %d resources Ready in /metrics after %s", op.Name, want, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lostChains tracks RefreshToken resources whose chain the operator reports lost because it was
// killed between Keycloak rotating the refresh token and the operator saving the new one: under
// strict rotation (reuse 0) the new refresh token existed only in the killed process. That window
// cannot be closed by the operator; it is counted and reported, and the resource is bootstrapped
// again as a person would. Any other RefreshTokenInvalid fails the test.
type lostChains struct {
	seen  map[string]bool
	which []string
}

func (l *lostChains) count() int { return len(l.which) }

func (l *lostChains) rebootstrap(t *testing.T) func([]authv1alpha1.MLflowAccessToken) {
	return func(items []authv1alpha1.MLflowAccessToken) {
		for i := range items {
			obj := &items[i]
			c := cond(obj, authv1alpha1.ConditionRenewalFailing)
			if c == nil || c.Status != "True" || c.Reason != authv1alpha1.ReasonRefreshTokenInvalid {
				continue
			}
			key := obj.Namespace + "/" + obj.Name + "@" + obj.Status.SessionID
			if l.seen[key] {
				continue
			}
			l.seen[key] = true
			if !strings.Contains(c.Message, "operator stopped while Keycloak rotated") {
				t.Errorf("%s/%s: refresh chain broken, not in the crash window: %s", obj.Namespace, obj.Name, c.Message)
			}
			l.which = append(l.which, obj.Namespace+"/"+obj.Name)
			var boot corev1.Secret
			if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: obj.Namespace, Name: obj.Spec.Grant.RefreshTokenSecretRef.Name}, &boot); err != nil {
				t.Fatal(err)
			}
			var idx int
			fmt.Sscanf(obj.Name, "rt-%d", &idx)
			boot.Data = map[string][]byte{"refresh-token": []byte(passwordGrant(t, users[(idx/2)%len(users)]))}
			if err := k8s.Update(context.Background(), &boot); err != nil {
				t.Fatal(err)
			}
		}
	}
}
