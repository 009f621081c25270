package fault

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// Slow and broken Keycloak, through the proxy: each fault gives a readable condition, the process
// survives, a Secret's token is never blanked, everything heals when Keycloak answers again, and
// goroutines return to their level before the storm.
func TestBrokenKeycloak(t *testing.T) {
	faults := []struct {
		f      Fault
		reason string // expected RenewalFailing reason; "" = reported, not asserted
	}{
		{Refuse, "KeycloakUnreachable"},
		{Delay, "KeycloakTimeout"},
		{Reset, "KeycloakUnreachable"},
		{HTML502, "KeycloakError"},
		{TruncatedJSON, "InvalidTokenResponse"},
		{HugeBody, "InvalidTokenResponse"},
		{ExpiresMissing, "InvalidTokenResponse"},
		{ExpiresZero, "InvalidTokenResponse"},
		{ExpiresNeg, "InvalidTokenResponse"},
		{ExpiresYears, "InvalidTokenResponse"},
		{ExpiresHuge, "InvalidTokenResponse"},
		{NotJWT, ""}, // reported: the operator accepts opaque access tokens
	}
	storms := pick(1, 3)
	ns := newNamespace(t, "broken")
	namespaces := []string{ns}
	for _, name := range []string{"steady-1", "steady-2"} {
		create(t, ccToken(ns, name))
	}
	op := startOperator(t, "op", namespaces)
	op.waitMetrics(t, time.Minute)
	waitAllReady(t, namespaces, 2, time.Minute)
	w := watchSecrets(t, namespaces, 300*time.Millisecond)
	time.Sleep(3 * time.Second)
	before, err := op.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.SetFault(PassThrough) })

	n := 2
	for s := 1; s <= storms; s++ {
		for _, tc := range faults {
			if err := proxy.SetFault(tc.f); err != nil {
				t.Fatal(err)
			}
			// A new resource meets the fault at its first issuance; the steady ones at renewal.
			name := "s" + string(rune('0'+s)) + "-" + string(tc.f)
			create(t, ccToken(ns, name))
			n++
			got, msg := waitFailing(t, ns, name, 30*time.Second)
			t.Logf("FIGURE fault %-16s → RenewalFailing reason %q, message %q", tc.f, got, truncate(msg, 160))
			if tc.reason != "" && got != tc.reason {
				t.Errorf("fault %s: reason %q, want %q (%s)", tc.f, got, tc.reason, msg)
			}
			if got == "" && tc.reason != "" {
				t.Errorf("fault %s: no failure reported", tc.f)
			}
			if !op.Alive() {
				t.Fatalf("the operator exited during fault %s:\n%s", tc.f, tail(op.Logs(), 40))
			}
			// No message carries token material or a body dump.
			if strings.Contains(msg, "eyJ") || strings.Contains(msg, "AAAAAAAA") || len(msg) > 1024 {
				t.Errorf("fault %s: the condition message quotes the response: %q", tc.f, truncate(msg, 200))
			}
		}
	}
	during, _ := op.Metrics()
	if err := proxy.SetFault(PassThrough); err != nil {
		t.Fatal(err)
	}
	healed := waitAllReady(t, namespaces, n, 2*time.Minute)
	// Let idle connections and finished reconciles settle before counting goroutines.
	time.Sleep(5 * time.Second)
	after, _ := op.Metrics()
	w.Stop()
	blanked, deleted, _, _, _ := w.Snapshot()
	gb, gd, ga := before["go_goroutines"], during["go_goroutines"], after["go_goroutines"]
	mb, md, ma := before["process_resident_memory_bytes"]/1e6, during["process_resident_memory_bytes"]/1e6, after["process_resident_memory_bytes"]/1e6
	t.Logf("FIGURE broken keycloak: faults=%d storms=%d time_to_all_ready_after_pass_through=%s goroutines before/end-of-storm/after=%.0f/%.0f/%.0f rss_MB before/end-of-storm/after=%.1f/%.1f/%.1f secrets_blanked=%d secrets_deleted=%d alive=%v",
		len(faults), storms, fmtDur(healed), gb, gd, ga, mb, md, ma, blanked, deleted, op.Alive())
	if ga > gb+20 {
		t.Errorf("goroutines grew from %.0f to %.0f over the fault storm", gb, ga)
	}
	if blanked != 0 || deleted != 0 {
		t.Errorf("%d Secrets blanked, %d deleted", blanked, deleted)
	}
	if !op.Alive() {
		t.Errorf("the operator exited")
	}
}

// waitFailing waits for RenewalFailing=True (or Ready=True: the fault was accepted) and returns
// the reason ("" when the resource became Ready) and message.
func waitFailing(t *testing.T, ns, name string, timeout time.Duration) (string, string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var obj authv1alpha1.MLflowAccessToken
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &obj); err == nil {
			if c := cond(&obj, authv1alpha1.ConditionRenewalFailing); c != nil && c.Status == metav1.ConditionTrue {
				return c.Reason, c.Message
			}
			if isReady(&obj) {
				var s corev1.Secret
				_ = k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s)
				return "", "accepted: Ready with a token of " + itoa(len(s.Data[tokensecret.KeyToken])) + " bytes, expiresAt " + string(s.Data[tokensecret.KeyExpiresAt])
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s/%s: neither failing nor Ready after %s", ns, name, timeout)
	return "", ""
}

func itoa(n int) string { return strconv.Itoa(n) }
