package fault

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// The API server stopped and started again while rotations are in flight: the operator process
// reconnects by itself, no resource is stuck, every Secret agrees with its resource's status
// (no lost update), refresh chains live on, and rotations continue.
func TestAPIServerRestart(t *testing.T) {
	nRes := pick(20, 60)
	down := pick(8*time.Second, 30*time.Second)
	namespaces := mixedFleet(t, "apiserver", nRes)
	op := startOperator(t, "op", namespaces)
	op.waitMetrics(t, time.Minute)
	waitAllReady(t, namespaces, nRes, 3*time.Minute)
	w := watchSecrets(t, namespaces, 500*time.Millisecond)
	time.Sleep(tokenLifespan / 2) // renewals are now spread over the lifetime: some are in flight
	proxy.ResetCounts()

	apiServer := env.ControlPlane.GetAPIServer()
	stopped := time.Now()
	// SIGTERM our own kube-apiserver child (found by its certificate directory), SIGKILL if it
	// takes longer than 5 s (it does: envtest's own Stop gives up after 20 s while watches drain), then
	// let envtest clean up its state so that Start works.
	how := stopProcessByArg(t, "kube-apiserver", env.ControlPlane.GetAPIServer().CertDir, 5*time.Second)
	if err := apiServer.Stop(); err != nil {
		t.Logf("envtest's Stop after the process exited: %v", err)
	}
	t.Logf("API server stopped (%s) after %s", how, fmtDur(time.Since(stopped)))
	time.Sleep(down)
	if err := apiServer.Start(); err != nil {
		t.Fatalf("restarting the API server: %v", err)
	}
	back := time.Now()
	// Healed: every resource has a token issued after the API server came back (all tokens
	// issued before expired during the outage), is Ready, and its Secret and status agree. Each
	// resource counts as healed the first time it is seen so: its tokens keep rotating (12 s
	// tokens, every 7-8 s), and a resource read between its Secret write and its status write
	// looks inconsistent for a moment; waiting for all 60 to look consistent in one pass measured
	// that race (up to 46 s) instead of the operator.
	var healed time.Duration
	healedAt := map[string]time.Duration{}
	notHealed := map[string]string{} // the last reason a resource still counted as not healed
	var pending []string
	for deadline := back.Add(3 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		pending = pending[:0]
		for _, obj := range listTokens(t, namespaces) {
			key := obj.Namespace + "/" + obj.Name
			if _, ok := healedAt[key]; ok {
				continue
			}
			sec := getSecret(t, obj.Namespace, obj.SecretNameOrDefault())
			var issued time.Time
			if sec != nil {
				issued, _ = time.Parse(time.RFC3339, sec.Annotations[tokensecret.AnnotationIssuedAt])
			}
			exp := time.Time{}
			if sec != nil {
				exp, _ = time.Parse(time.RFC3339, string(sec.Data[tokensecret.KeyExpiresAt]))
			}
			if c := cond(&obj, authv1alpha1.ConditionRenewalFailing); c != nil && c.Status == metav1.ConditionTrue && c.Reason == authv1alpha1.ReasonRefreshTokenInvalid {
				// A broken chain never heals by itself: chainsAlive below counts and reports it.
				continue
			}
			var reason string
			switch {
			case !isReady(&obj):
				reason = "not Ready: " + condMessageOf(&obj, authv1alpha1.ConditionReady)
			case issued.Before(back.Add(-time.Second)):
				reason = "token issued at " + issued.Format(time.RFC3339) + ", before the API server came back at " + back.Format(time.RFC3339)
			case obj.Status.ExpiresAt == nil || !exp.Equal(obj.Status.ExpiresAt.Time):
				reason = "the Secret's expiresAt " + exp.Format(time.RFC3339) + " differs from the status' " + obj.Status.ExpiresAt.String()
			}
			if reason != "" {
				notHealed[key] = fmtDur(time.Since(back)) + ": " + reason
				pending = append(pending, key)
				continue
			}
			healedAt[key] = time.Since(back)
			if healedAt[key] > healed {
				healed = healedAt[key]
				notHealed["(last)"] = key + " (" + notHealed[key] + ")"
			}
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d resources without a token issued after the API server came back, 3 minutes later: %v", len(pending), pending)
		}
	}
	if !op.Alive() {
		t.Fatalf("the operator exited while the API server was down:\n%s", tail(op.Logs(), 30))
	}
	stuck := 0
	if healBound := tokenLifespan + maxRetry + 15*time.Second; healed > healBound {
		stuck = 1
		t.Errorf("the last resource got a new token %s after the API server came back (its token had expired during the outage); want within %s; the last one: %s",
			fmtDur(healed), healBound, notHealed["(last)"])
	}
	lost := lostUpdates(t, namespaces)
	w.Stop()
	blanked, deleted, _, notDue, _ := w.Snapshot()
	alive, broken, why := chainsAlive(t, namespaces)
	c := proxy.Counts()
	t.Logf("FIGURE apiserver restart: resources=%d apiserver_down=%s time_to_all_renewed_after_start=%s slow=%d lost_updates=%d chains_alive=%d chains_broken=%d double_redemptions=%d secrets_blanked=%d secrets_deleted=%d not_due=%d operator_alive=%v",
		nRes, fmtDur(back.Sub(stopped)), fmtDur(healed), stuck, lost, alive, broken, c.DoubleRedemptions, blanked, deleted, notDue, op.Alive())
	if lost != 0 || broken != 0 || c.DoubleRedemptions != 0 || blanked != 0 || deleted != 0 {
		t.Errorf("lost updates %d, broken chains %d (%v), double redemptions %d, blanked %d, deleted %d", lost, broken, why, c.DoubleRedemptions, blanked, deleted)
	}
}

// lostUpdates counts resources whose Secret and status disagree about the current token (expiry
// and issue time), re-reading a few times so that a rotation between the two reads is not
// mistaken for a lost update.
func lostUpdates(t *testing.T, namespaces []string) int {
	t.Helper()
	lost := 0
	for _, obj := range listTokens(t, namespaces) {
		ok := false
		for try := 0; try < 5 && !ok; try++ {
			if try > 0 {
				time.Sleep(time.Second)
				_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(&obj), &obj)
			}
			var s corev1.Secret
			if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: obj.Namespace, Name: obj.SecretNameOrDefault()}, &s); err != nil {
				continue
			}
			exp, _ := time.Parse(time.RFC3339, string(s.Data[tokensecret.KeyExpiresAt]))
			tok := string(s.Data[tokensecret.KeyToken])
			hashOK := s.Annotations[tokensecret.AnnotationTokenHash] == tokensecret.Hash(tok)
			ok = tok != "" && obj.Status.ExpiresAt != nil && exp.Equal(obj.Status.ExpiresAt.Time.Truncate(time.Second)) && hashOK
		}
		if !ok {
			lost++
			t.Errorf("%s/%s: the Secret and the status disagree about the current token", obj.Namespace, obj.Name)
		}
	}
	return lost
}

// stopProcessByArg stops the child process whose command line contains both name and arg.
func stopProcessByArg(t *testing.T, name, arg string, grace time.Duration) string {
	t.Helper()
	pid := 0
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		cl := string(b)
		if strings.Contains(cl, name) && strings.Contains(cl, arg) && os.Getppid() != n {
			pid = n
			break
		}
	}
	if pid == 0 {
		t.Fatalf("no %s process with %s in its arguments", name, arg)
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil || isZombie(pid) {
			return "SIGTERM"
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for syscall.Kill(pid, 0) == nil && !isZombie(pid) {
		time.Sleep(100 * time.Millisecond)
	}
	return "SIGKILL after " + grace.String()
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}
