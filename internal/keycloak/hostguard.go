package keycloak

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// One Keycloak that hangs must not stall the tokens of every other Keycloak. A request holds a
// reconcile worker until it is answered or times out; a host that accepts connections and never
// answers would, without a bound, soon hold every worker, and the renewals of healthy tenants
// would wait behind it (measured before this guard: with 200 resources on such a host, 30 healthy
// 20-second tokens of another namespace expired, renewals ran 13 s late).
//
// hostGuard bounds that, per host (scheme://host:port as the request names it):
//   - at most Limits.PerHostInFlight requests are in flight; a request that finds them all busy
//     waits at most a second for a slot, then fails at once as unreachable (a healthy Keycloak
//     answers in milliseconds, so its requests practically never wait);
//   - after BreakerThreshold timeouts in a row the host's circuit opens:
//     its requests fail at once, without touching the network, for a cool-down that doubles
//     from BreakerCooldown up to BreakerMaxCooldown; then one request probes the host, and its
//     success closes the circuit.
//
// Only silence counts: a timeout. Answers of any status (400, 401, 500), garbage, and refused or
// reset connections come back at once and hold no worker: each keeps its own reason.

// Defaults of the guard. The cool-down stays short (at most one Keycloak timeout): a probe costs
// one worker for at most that long, and a Keycloak that comes back is used again within seconds.
const (
	DefaultPerHostInFlight = 2
	BreakerThreshold       = 2
	BreakerCooldown        = 5 * time.Second
	BreakerMaxCooldown     = 15 * time.Second
	slotWait               = time.Second
	// idleHostAfter: a host not asked for this long is forgotten (hosts are named by tenants, so
	// their number is not bounded by the operator's configuration).
	idleHostAfter = 10 * time.Minute
	sweepAbove    = 256
)

type hostGuard struct {
	perHost  int
	slotWait time.Duration
	now      func() time.Time
	mu       sync.Mutex
	hosts    map[string]*hostState
}

type hostState struct {
	slots    chan struct{}
	failures int       // timeouts or connection failures in a row
	openTill time.Time // circuit open until then
	cooldown time.Duration
	probing  bool // a probe is in flight while the circuit is half-open
	lastUsed time.Time
}

func newHostGuard(perHost int) *hostGuard {
	if perHost <= 0 {
		perHost = DefaultPerHostInFlight
	}
	return &hostGuard{perHost: perHost, slotWait: slotWait, now: time.Now, hosts: map[string]*hostState{}}
}

// guardError: the request never left; it names why.
type guardError struct{ msg string }

func (e *guardError) Error() string { return e.msg }

func (g *hostGuard) state(host string) *hostState {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if len(g.hosts) > sweepAbove {
		for h, s := range g.hosts {
			if now.Sub(s.lastUsed) > idleHostAfter && len(s.slots) == 0 {
				delete(g.hosts, h)
			}
		}
	}
	s, ok := g.hosts[host]
	if !ok {
		s = &hostState{slots: make(chan struct{}, g.perHost), cooldown: BreakerCooldown}
		g.hosts[host] = s
	}
	s.lastUsed = now
	return s
}

// admit decides whether a request to host may go out now; probe says it is the half-open probe.
func (g *hostGuard) admit(s *hostState, host string) (probe bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	switch {
	case now.Before(s.openTill):
		return false, &guardError{fmt.Sprintf("%s did not answer %d requests in a row; not asking it again before %s (circuit open)",
			host, s.failures, s.openTill.UTC().Format(time.RFC3339))}
	case s.failures >= BreakerThreshold && s.probing:
		return false, &guardError{fmt.Sprintf("%s did not answer %d requests in a row; another request is checking whether it is back", host, s.failures)}
	case s.failures >= BreakerThreshold:
		s.probing = true
		return true, nil
	}
	return false, nil
}

// record notes the outcome of a request that went out.
func (g *hostGuard) record(s *hostState, probe bool, silent bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if probe {
		s.probing = false
	}
	if !silent {
		s.failures, s.cooldown, s.openTill = 0, BreakerCooldown, time.Time{}
		return
	}
	s.failures++
	if s.failures >= BreakerThreshold {
		if probe {
			s.cooldown = min(2*s.cooldown, BreakerMaxCooldown)
		}
		s.openTill = g.now().Add(s.cooldown)
	}
}

// wrap guards every request through next.
func (g *hostGuard) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		host := req.URL.Scheme + "://" + req.URL.Host
		s := g.state(host)
		probe, err := g.admit(s, host)
		if err != nil {
			return nil, err
		}
		wait := time.NewTimer(g.slotWait)
		defer wait.Stop()
		select {
		case s.slots <- struct{}{}:
		case <-wait.C:
			if probe {
				g.record(s, true, false) // not a verdict on the host: let the next request probe
			}
			return nil, &guardError{fmt.Sprintf("%s already has %d requests in flight that it has not answered", host, g.perHost)}
		case <-req.Context().Done():
			if probe {
				g.record(s, true, false)
			}
			return nil, req.Context().Err()
		}
		resp, err := next.RoundTrip(req)
		<-s.slots
		g.record(s, probe, err != nil && silence(req.Context(), err))
		return resp, err
	})
}

// silence: the host did not answer in time (the request's deadline, or a network timeout), as
// opposed to the caller giving up for reasons of its own, a refused connection or a protocol error.
func silence(ctx context.Context, err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled) && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}
