package keycloak

import (
	"fmt"
	"net/http"
	"sync"

	"golang.org/x/time/rate"
)

// Limits bound the request rate the operator sends to Keycloak, so that a burst of new
// resources or a restart never exceeds what Keycloak is meant to take.
type Limits struct {
	// QPS and Burst limit all requests together (0: unlimited).
	QPS   float64
	Burst int
	// PerHostQPS and PerHostBurst limit the requests to each Keycloak host (0: unlimited).
	PerHostQPS   float64
	PerHostBurst int
	// PerHostInFlight bounds the requests in flight to one Keycloak (0: DefaultPerHostInFlight),
	// so that a Keycloak that does not answer holds at most this many reconcile workers (see
	// hostGuard).
	PerHostInFlight int
}

// limiter holds the token buckets; one is shared by every transport of a GoCloak.
type limiter struct {
	limits  Limits
	global  *rate.Limiter
	mu      sync.Mutex
	perHost map[string]*rate.Limiter
}

func newLimiter(l Limits) *limiter {
	lim := &limiter{limits: l, perHost: map[string]*rate.Limiter{}}
	if l.QPS > 0 {
		lim.global = rate.NewLimiter(rate.Limit(l.QPS), max(l.Burst, 1))
	}
	return lim
}

// wrap makes every request through next wait for its turn. A request whose context ends while it
// waits fails with a rateLimitError and never reaches Keycloak.
func (l *limiter) wrap(next http.RoundTripper) http.RoundTripper {
	if l.global == nil && l.limits.PerHostQPS <= 0 {
		return next
	}
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if err := l.wait(req); err != nil {
			return nil, err
		}
		return next.RoundTrip(req)
	})
}

func (l *limiter) wait(req *http.Request) error {
	if l.limits.PerHostQPS > 0 {
		l.mu.Lock()
		if len(l.perHost) > 4*sweepAbove {
			// Hosts are named by tenants: start over rather than grow without bound (the global
			// bucket still limits the total).
			clear(l.perHost)
		}
		h, ok := l.perHost[req.URL.Host]
		if !ok {
			h = rate.NewLimiter(rate.Limit(l.limits.PerHostQPS), max(l.limits.PerHostBurst, 1))
			l.perHost[req.URL.Host] = h
		}
		l.mu.Unlock()
		if err := h.Wait(req.Context()); err != nil {
			return &rateLimitError{fmt.Sprintf("the per-Keycloak rate limit (%g/s)", l.limits.PerHostQPS), err}
		}
	}
	if l.global != nil {
		if err := l.global.Wait(req.Context()); err != nil {
			return &rateLimitError{fmt.Sprintf("the global Keycloak rate limit (%g/s)", l.limits.QPS), err}
		}
	}
	return nil
}

// rateLimitError: a request waited longer for its turn than its context allowed.
type rateLimitError struct {
	limit string
	err   error
}

func (e *rateLimitError) Error() string {
	return "waited too long for " + e.limit + ": " + e.err.Error()
}
func (e *rateLimitError) Unwrap() error { return e.err }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
