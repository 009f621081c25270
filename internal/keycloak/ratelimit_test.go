package keycloak

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

type countingClient struct {
	Client
	n atomic.Int64
}

func (c *countingClient) ClientCredentials(context.Context, Endpoint, Credentials, []string) (*Token, error) {
	c.n.Add(1)
	return &Token{AccessToken: "a", ExpiresIn: time.Minute}, nil
}

// A burst of calls is held to the configured rate; a call whose context ends while it waits
// never reaches Keycloak and fails with a timeout.
func TestRateLimited(t *testing.T) {
	inner := &countingClient{}
	c := RateLimited(inner, Limits{QPS: 20, Burst: 5, PerHostQPS: 1000, PerHostBurst: 1000})
	ep := Endpoint{URL: "http://kc", Realm: "r"}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var ok, limited int
	for range 100 {
		if _, err := c.ClientCredentials(ctx, ep, Credentials{}, nil); err != nil {
			if ReasonOf(err) != ReasonTimeout {
				t.Fatalf("reason %s", ReasonOf(err))
			}
			limited++
		} else {
			ok++
		}
	}
	// 5 of burst + 20/s over 0.5 s ≈ 15; allow slack for a slow machine but never near 100.
	if ok > 20 || int64(ok) != inner.n.Load() || limited == 0 {
		t.Errorf("%d calls passed (inner saw %d), %d limited; want about 15 passed", ok, inner.n.Load(), limited)
	}
	t.Logf("%d of 100 calls passed in 0.5 s at 20/s burst 5", ok)
}
