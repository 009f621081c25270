package keycloak

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeNet answers requests as a scripted host would; it counts what reached it.
type fakeNet struct {
	reached atomic.Int32
	answer  func(*http.Request) (*http.Response, error)
}

func (f *fakeNet) RoundTrip(r *http.Request) (*http.Response, error) {
	f.reached.Add(1)
	return f.answer(r)
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func request(t *testing.T, rt http.RoundTripper, host string) error {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "https://"+host+"/realms/r/protocol/openid-connect/token", nil)
	resp, err := rt.RoundTrip(req)
	if resp != nil {
		resp.Body.Close()
	}
	return err
}

func TestHostGuardOpensAfterSilenceAndProbes(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	g := newHostGuard(2)
	g.now = func() time.Time { return now }
	silent := true
	net := &fakeNet{answer: func(*http.Request) (*http.Response, error) {
		if silent {
			return nil, timeoutErr{}
		}
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}}
	rt := g.wrap(net)
	for i := 0; i < BreakerThreshold; i++ {
		if err := request(t, rt, "hang.example.com"); err == nil {
			t.Fatal("a timeout passed as success")
		}
	}
	reached := net.reached.Load()
	err := request(t, rt, "hang.example.com")
	var ge *guardError
	if !errors.As(err, &ge) || !strings.Contains(err.Error(), "circuit open") || net.reached.Load() != reached {
		t.Fatalf("with the circuit open: %v (reached %d → %d)", err, reached, net.reached.Load())
	}
	if err := request(t, rt, "other.example.com"); err == nil || errors.As(err, &ge) {
		t.Fatalf("another host was short-circuited too: %v", err)
	}
	// After the cool-down one probe goes out; still silent: open again, twice as long.
	now = now.Add(BreakerCooldown)
	reached = net.reached.Load()
	if err := request(t, rt, "hang.example.com"); errors.As(err, &ge) || net.reached.Load() != reached+1 {
		t.Fatalf("the probe did not go out: %v", err)
	}
	now = now.Add(BreakerCooldown)
	if err := request(t, rt, "hang.example.com"); !errors.As(err, &ge) {
		t.Fatalf("the cool-down did not double: %v", err)
	}
	now = now.Add(BreakerCooldown)
	silent = false
	if err := request(t, rt, "hang.example.com"); err != nil {
		t.Fatalf("the probe failed: %v", err)
	}
	if err := request(t, rt, "hang.example.com"); err != nil {
		t.Fatalf("the circuit did not close after a successful probe: %v", err)
	}
}

func TestHostGuardAnswersAreNotSilence(t *testing.T) {
	g := newHostGuard(2)
	net := &fakeNet{answer: func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 500, Body: http.NoBody}, nil
	}}
	rt := g.wrap(net)
	for range 10 {
		if err := request(t, rt, "broken.example.com"); err != nil {
			t.Fatalf("an answer of 500 was short-circuited: %v", err)
		}
	}
	if net.reached.Load() != 10 {
		t.Fatalf("%d of 10 requests reached the host", net.reached.Load())
	}
}

func TestHostGuardBoundsRequestsInFlight(t *testing.T) {
	g := newHostGuard(2)
	g.slotWait = 20 * time.Millisecond
	release := make(chan struct{})
	net := &fakeNet{answer: func(*http.Request) (*http.Response, error) {
		<-release
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}}
	rt := g.wrap(net)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = request(t, rt, "slow.example.com") }()
	}
	for net.reached.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	err := request(t, rt, "slow.example.com")
	var ge *guardError
	if !errors.As(err, &ge) || !strings.Contains(err.Error(), "2 requests in flight") {
		t.Fatalf("a third request while two hang: %v", err)
	}
	close(release)
	wg.Wait()
	if err := request(t, rt, "slow.example.com"); err != nil {
		t.Fatalf("after the two were answered: %v", err)
	}
	if got := net.reached.Load(); got != 3 {
		t.Fatalf("%d requests reached the host, want 3", got)
	}
}

func TestGuardErrorIsUnreachable(t *testing.T) {
	err := transportError(context.Background(), &guardError{"x is silent"}, "token request")
	var ke *Error
	if !errors.As(err, &ke) || ke.Reason != ReasonUnreachable || !strings.Contains(ke.Message, "not sent: x is silent") {
		t.Fatalf("got %v", err)
	}
}

func TestHostGuardRefusedConnectionsAreNotSilence(t *testing.T) {
	g := newHostGuard(2)
	refused := &fakeNet{answer: func(*http.Request) (*http.Response, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}}
	rt := g.wrap(refused)
	for range 5 {
		var ge *guardError
		if err := request(t, rt, "down.example.com"); errors.As(err, &ge) {
			t.Fatalf("a refused connection opened the circuit: %v (it returns at once and holds no worker)", err)
		}
	}
	if refused.reached.Load() != 5 {
		t.Fatalf("%d of 5 requests reached the host", refused.reached.Load())
	}
}
