package keycloak

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/time/rate"
)

// Limits bound the request rate the operator sends to Keycloak, so that a burst of new
// resources or a restart never exceeds what Keycloak is meant to take.
type Limits struct {
	// QPS and Burst limit all calls together (0: unlimited).
	QPS   float64
	Burst int
	// PerHostQPS and PerHostBurst limit the calls to each Keycloak base URL (0: unlimited).
	PerHostQPS   float64
	PerHostBurst int
}

// RateLimited wraps c so that every call waits for its turn under l. A call whose context ends
// while waiting fails with a timeout and never reaches Keycloak.
func RateLimited(c Client, l Limits) Client {
	rl := &rateLimited{Client: c, limits: l, perHost: map[string]*rate.Limiter{}}
	if l.QPS > 0 {
		rl.global = rate.NewLimiter(rate.Limit(l.QPS), max(l.Burst, 1))
	}
	return rl
}

type rateLimited struct {
	Client
	limits  Limits
	global  *rate.Limiter
	mu      sync.Mutex
	perHost map[string]*rate.Limiter
}

func (r *rateLimited) wait(ctx context.Context, ep Endpoint) error {
	if r.limits.PerHostQPS > 0 {
		r.mu.Lock()
		l, ok := r.perHost[ep.URL]
		if !ok {
			l = rate.NewLimiter(rate.Limit(r.limits.PerHostQPS), max(r.limits.PerHostBurst, 1))
			r.perHost[ep.URL] = l
		}
		r.mu.Unlock()
		if err := l.Wait(ctx); err != nil {
			return &Error{Reason: ReasonTimeout, Message: fmt.Sprintf("waited too long for the per-Keycloak rate limit (%g/s): %v", r.limits.PerHostQPS, err)}
		}
	}
	if r.global != nil {
		if err := r.global.Wait(ctx); err != nil {
			return &Error{Reason: ReasonTimeout, Message: fmt.Sprintf("waited too long for the global Keycloak rate limit (%g/s): %v", r.limits.QPS, err)}
		}
	}
	return nil
}

func (r *rateLimited) ClientCredentials(ctx context.Context, ep Endpoint, c Credentials, s []string) (*Token, error) {
	if err := r.wait(ctx, ep); err != nil {
		return nil, err
	}
	return r.Client.ClientCredentials(ctx, ep, c, s)
}

func (r *rateLimited) Refresh(ctx context.Context, ep Endpoint, c Credentials, rt string, s []string) (*Token, error) {
	if err := r.wait(ctx, ep); err != nil {
		return nil, err
	}
	return r.Client.Refresh(ctx, ep, c, rt, s)
}

func (r *rateLimited) Password(ctx context.Context, ep Endpoint, c Credentials, u UserCredentials, s []string) (*Token, error) {
	if err := r.wait(ctx, ep); err != nil {
		return nil, err
	}
	return r.Client.Password(ctx, ep, c, u, s)
}

func (r *rateLimited) Revoke(ctx context.Context, ep Endpoint, c Credentials, tok, hint string) error {
	if err := r.wait(ctx, ep); err != nil {
		return err
	}
	return r.Client.Revoke(ctx, ep, c, tok, hint)
}

func (r *rateLimited) Introspect(ctx context.Context, ep Endpoint, c Credentials, tok, hint string) (bool, error) {
	if err := r.wait(ctx, ep); err != nil {
		return false, err
	}
	return r.Client.Introspect(ctx, ep, c, tok, hint)
}

func (r *rateLimited) DeleteSession(ctx context.Context, ep Endpoint, admin, sid string, offline bool) (bool, error) {
	if err := r.wait(ctx, ep); err != nil {
		return false, err
	}
	return r.Client.DeleteSession(ctx, ep, admin, sid, offline)
}
