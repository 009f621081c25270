package csi

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/localdemo/tokenline"
)

// watchLines parses a tokenwatch pod's log: one line per new token it read, in order.
func watchLines(t testing.TB, ns, name string) []tokenline.Line {
	t.Helper()
	var lines []tokenline.Line
	for _, s := range strings.Split(podLog(t, ns, name), "\n") {
		if l, ok := tokenline.Parse(s); ok {
			lines = append(lines, l)
		}
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].Seen.Before(lines[j].Seen) })
	return lines
}

// expiredReads counts the tokens a reader still held after they expired: a token whose successor
// was first read after its expiry (or, for the last one, that expired before end).
func expiredReads(lines []tokenline.Line, end time.Time) int {
	n := 0
	for i, l := range lines {
		next := end
		if i+1 < len(lines) {
			next = lines[i+1].Seen
		}
		if !l.Expires.IsZero() && next.After(l.Expires) {
			n++
		}
	}
	return n
}

// testRotation: readers poll their token file every 2 ms while their tokens (6 s) rotate. The
// time from Keycloak's answer (the plugin logs it with the new token's fingerprint) to the first
// read of the new token in the pod is the delivery time.
func testRotation(t *testing.T) {
	const readers = 5
	const run = 90 * time.Second
	ctx := context.Background()
	start := time.Now()
	var names []string
	for i := 0; i < readers; i++ {
		p := createPod(t, watcher(rotor, fmt.Sprintf("rotor-%d", i)))
		names = append(names, p.Name)
	}
	for _, n := range names {
		waitRunning(t, rotor.Namespace, n, 2*time.Minute)
	}
	time.Sleep(run)
	end := time.Now()
	answered := map[string]time.Time{}
	for _, l := range pluginLog(t, false) {
		if l.Msg == "Rotated a token" && strings.HasPrefix(l.Pod, rotor.Namespace+"/") {
			if at, err := time.Parse(time.RFC3339Nano, l.AnsweredAt); err == nil {
				answered[l.Token] = at
			}
		}
	}
	var delays []time.Duration
	expired := 0
	for _, n := range names {
		lines := watchLines(t, rotor.Namespace, n)
		if len(lines) < 2 {
			t.Errorf("reader %s saw %d tokens", n, len(lines))
		}
		expired += expiredReads(lines, end)
		for _, l := range lines[1:] {
			if at, ok := answered[l.Fingerprint]; ok {
				delays = append(delays, l.Seen.Sub(at))
			}
		}
	}
	for _, n := range names {
		_ = deletePod(rotor.Namespace, n)
	}
	if len(delays) < 100 {
		t.Errorf("%d rotations matched with the plugin's log, want at least 100", len(delays))
	}
	if expired > 0 {
		t.Errorf("the readers held an expired token %d times", expired)
	}
	for _, d := range delays {
		if d < -time.Millisecond || d > 5*time.Second {
			t.Errorf("a rotation took %s from Keycloak's answer to the pod (the plugin's clock and the pod's are the same)", d)
			break
		}
	}
	figures.Figure("rotation (%d readers, %s tokens, %s): %d rotations, Keycloak's answer -> new token read in the pod: p50 %s, p99 %s, max %s (aim: p99 < 100ms); reads of an expired token: %d",
		readers, rotor.Lifespan, run, len(delays), percentile(delays, 0.5), percentile(delays, 0.99), percentile(delays, 1), expired)

	// Keycloak requests per pod and token lifetime, from its events of the rotor client.
	evs, err := kcEvents(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	grants := 0
	for _, e := range evs {
		if e.ClientID == rotor.ClientID && e.Type == "CLIENT_LOGIN" {
			grants++
		}
	}
	lifetimes := end.Sub(start).Seconds() / rotor.Lifespan.Seconds()
	figures.Figure("Keycloak requests per pod per token lifetime: %.2f token requests (%d grants, %d pods, %.0f lifetimes; renewal at 2/3 of the life less jitter, whole seconds; plus one revocation per pod at its end)",
		float64(grants)/readers/lifetimes, grants, readers, lifetimes)
}
