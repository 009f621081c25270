package keycloak

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// A burst of requests is held to the configured rate, whatever their kind; a request whose
// context ends while it waits never reaches Keycloak and fails with a timeout.
func TestRateLimited(t *testing.T) {
	var seen atomic.Int64
	ep := serve(t, func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		jsonReply(200, `{"access_token":"`+jwtWith(map[string]any{"azp": "x"})+`","expires_in":60}`)(w, r)
	})
	c := NewGoCloak(Options{Limits: Limits{QPS: 20, Burst: 5, PerHostQPS: 1000, PerHostBurst: 1000}})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var ok, limited int
	for i := range 100 {
		var err error
		if i%2 == 0 {
			_, err = c.Token(ctx, ep, creds, Grant{Type: GrantClientCredentials})
		} else {
			err = c.Revoke(ctx, ep, creds, "t", "access_token")
		}
		if err != nil {
			if ReasonOf(err) != ReasonTimeout {
				t.Fatalf("reason %s (%v)", ReasonOf(err), err)
			}
			limited++
		} else {
			ok++
		}
	}
	// 5 of burst + 20/s over 0.5 s ≈ 15; allow slack for a slow machine but never near 100.
	if ok > 20 || int64(ok) != seen.Load() || limited == 0 {
		t.Errorf("%d calls passed (the server saw %d), %d limited; want about 15 passed", ok, seen.Load(), limited)
	}
	t.Logf("%d of 100 calls passed in 0.5 s at 20/s burst 5", ok)
}

// Every call reports its outcome to Options.Observe, after classification.
func TestObserve(t *testing.T) {
	ep := serve(t, jsonReply(401, `{"error":"invalid_client","error_description":"Invalid client credentials"}`))
	var got []string
	c := NewGoCloak(Options{Observe: func(op Op, _ time.Duration, err error) {
		got = append(got, op.Grant+"/"+op.Endpoint+"/"+string(ReasonOf(err)))
	}})
	_, _ = c.Token(context.Background(), ep, creds, Grant{Type: GrantRefreshToken, RefreshToken: "r"})
	_ = c.Revoke(context.Background(), ep, creds, "t", "refresh_token")
	want := []string{"refresh_token/token/InvalidClientCredentials", "refresh_token/revoke/InvalidClientCredentials"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("observed %v, want %v", got, want)
	}
}

// A client assertion (a Kubernetes service-account token) replaces the secret in the form.
func TestClientAssertion(t *testing.T) {
	ep := serve(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.PostForm.Get("client_secret") != "" || r.PostForm.Get("client_assertion") != "sa.jwt.token" ||
			r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" ||
			r.PostForm.Get("client_id") != "c" {
			t.Errorf("form = %v", r.PostForm)
		}
		jsonReply(200, `{"access_token":"`+jwtWith(map[string]any{"azp": "c"})+`","expires_in":60}`)(w, r)
	})
	if _, err := NewGoCloak(Options{}).Token(context.Background(), ep, ClientAuth{ClientID: "c", Assertion: "sa.jwt.token"}, Grant{Type: GrantClientCredentials}); err != nil {
		t.Fatal(err)
	}
}
