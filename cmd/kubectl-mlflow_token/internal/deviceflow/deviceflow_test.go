package deviceflow

// The polling rules (interval, slow_down, back-off, expiry) are tested here against an httptest
// server that answers a scripted sequence, with a fake clock: a real Keycloak cannot be made to
// answer slow_down or 503 on cue. The real Keycloak flow is tested in test/integration.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const secret = "s%+&= ecret"

type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	slept  []time.Duration
	cancel func() // called at the n-th sleep when set
	cancAt int
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.slept = append(f.slept, d)
	f.now = f.now.Add(d)
	n := len(f.slept)
	f.mu.Unlock()
	if f.cancel != nil && n == f.cancAt {
		f.cancel()
	}
	return ctx.Err()
}

// server answers the device authorization once and then the token requests from script, one
// entry per request ("pending", "slow_down", "denied", "expired", "503", "token", "invalid_grant").
func server(t *testing.T, deviceAnswer string, script ...string) (*httptest.Server, *int) {
	t.Helper()
	var mu sync.Mutex
	polls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Error("credentials sent in an Authorization header; they must travel in the form body")
		}
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		if r.PostForm.Get("client_id") != "cli" || r.PostForm.Get("client_secret") != secret {
			t.Errorf("client authentication in the form = %v", r.PostForm)
		}
		w.Header().Set("Content-Type", "application/json")
		oauthErr := func(code int, e string) {
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error":%q,"error_description":"described %s"}`, e, e)
		}
		switch r.URL.Path {
		case "/device":
			if r.PostForm.Get("scope") != "openid offline_access" {
				t.Errorf("scope = %q", r.PostForm.Get("scope"))
			}
			fmt.Fprint(w, deviceAnswer)
		case "/token":
			if r.PostForm.Get("grant_type") != GrantType || r.PostForm.Get("device_code") != "dev-code" {
				t.Errorf("token request form = %v", r.PostForm)
			}
			mu.Lock()
			step := "token"
			if polls < len(script) {
				step = script[polls]
			}
			polls++
			mu.Unlock()
			switch step {
			case "pending":
				oauthErr(400, ErrorAuthorizationPending)
			case "slow_down":
				oauthErr(400, ErrorSlowDown)
			case "denied":
				oauthErr(400, ErrorAccessDenied)
			case "expired":
				oauthErr(400, ErrorExpiredToken)
			case "invalid_grant":
				oauthErr(400, "invalid_grant")
			case "503":
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(503)
				fmt.Fprint(w, "<html>busy</html>")
			default:
				fmt.Fprint(w, `{"access_token":"AT-secret","refresh_token":"RT-secret","token_type":"Bearer","scope":"openid offline_access","expires_in":300,"refresh_expires_in":0}`)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &polls
}

const goodDevice = `{"device_code":"dev-code","user_code":"ABCD-EFGH","verification_uri":"https://kc.example/realms/r/device","verification_uri_complete":"https://kc.example/realms/r/device?user_code=ABCD-EFGH","expires_in":600,"interval":2}`

func client(srv *httptest.Server, clk *fakeClock) *Client {
	return &Client{
		HTTP: srv.Client(), DeviceAuthorizationURL: srv.URL + "/device", TokenURL: srv.URL + "/token",
		ClientID: "cli", ClientSecret: secret, Now: clk.Now, Sleep: clk.Sleep,
	}
}

func run(t *testing.T, deviceAnswer string, script ...string) (*Token, error, *fakeClock, int) {
	t.Helper()
	srv, polls := server(t, deviceAnswer, script...)
	clk := &fakeClock{now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	c := client(srv, clk)
	a, err := c.Authorize(context.Background(), []string{"openid", "offline_access"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Poll(context.Background(), a)
	return tok, err, clk, *polls
}

func TestPollHonoursIntervalAndSlowDown(t *testing.T) {
	tok, err, clk, polls := run(t, goodDevice, "pending", "slow_down", "pending", "slow_down", "token")
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken != "RT-secret" || tok.ExpiresIn != 300*time.Second {
		t.Errorf("token = %v", tok)
	}
	// interval 2 s; each slow_down adds 5 s for all later polls.
	want := []time.Duration{2 * time.Second, 2 * time.Second, 7 * time.Second, 7 * time.Second, 12 * time.Second}
	if fmt.Sprint(clk.slept) != fmt.Sprint(want) || polls != 5 {
		t.Errorf("waits %v (polls %d), want %v", clk.slept, polls, want)
	}
}

func TestPollBacksOffWhenTheServerFails(t *testing.T) {
	_, err, clk, _ := run(t, goodDevice, "503", "503", "pending", "token")
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	if fmt.Sprint(clk.slept) != fmt.Sprint(want) {
		t.Errorf("waits %v, want %v", clk.slept, want)
	}
}

func TestPollOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script []string
		code   string
	}{
		{"denied", []string{"pending", "denied"}, ErrorAccessDenied},
		{"expired by the server", []string{"pending", "expired"}, ErrorExpiredToken},
		{"other error", []string{"invalid_grant"}, "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err, _, _ := run(t, goodDevice, tc.script...)
			if tok != nil || CodeOf(err) != tc.code {
				t.Fatalf("got %v, %v; want code %s", tok, err, tc.code)
			}
			if !strings.Contains(err.Error(), "described") && tc.code != ErrorExpiredToken {
				t.Errorf("the server's description is missing: %v", err)
			}
		})
	}
}

// The code's lifetime runs out while the server still says pending: Poll stops by itself, and an
// invalid_grant after expiry (Keycloak forgets expired codes) is reported as expired.
func TestPollStopsWhenTheCodeExpires(t *testing.T) {
	short := strings.Replace(goodDevice, `"expires_in":600`, `"expires_in":5`, 1)
	script := []string{"pending", "pending", "pending", "pending", "pending", "pending"}
	_, err, clk, polls := run(t, short, script...)
	if CodeOf(err) != ErrorExpiredToken {
		t.Fatalf("err = %v", err)
	}
	if polls > 3 {
		t.Errorf("polled %d times after the code expired (waits %v)", polls, clk.slept)
	}
	_, err, _, _ = run(t, short, "pending", "pending", "invalid_grant")
	if CodeOf(err) != ErrorExpiredToken || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("invalid_grant after expiry: %v", err)
	}
}

func TestPollStopsWhenCancelled(t *testing.T) {
	srv, _ := server(t, goodDevice, "pending", "pending", "pending", "pending")
	clk := &fakeClock{now: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	clk.cancel, clk.cancAt = cancel, 2
	c := client(srv, clk)
	a, err := c.Authorize(ctx, []string{"openid", "offline_access"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Poll(ctx, a); err != context.Canceled {
		t.Fatalf("err = %v", err)
	}
}

func TestAuthorizeRejectsUnusableAnswers(t *testing.T) {
	for name, answer := range map[string]string{
		"no device code":       `{"user_code":"A","verification_uri":"https://x/d","expires_in":600}`,
		"javascript URI":       `{"device_code":"d","user_code":"A","verification_uri":"javascript:alert(1)","expires_in":600}`,
		"escape in user code":  `{"device_code":"d","user_code":"A\u001b[2J","verification_uri":"https://x/d","expires_in":600}`,
		"escape in complete":   `{"device_code":"d","user_code":"A","verification_uri":"https://x/d","verification_uri_complete":"https://x/d?\u001b]0;","expires_in":600}`,
		"no expiry":            `{"device_code":"d","user_code":"A","verification_uri":"https://x/d"}`,
		"not an object":        `[1,2]`,
		"negative expires_in":  `{"device_code":"d","user_code":"A","verification_uri":"https://x/d","expires_in":-1}`,
		"absurd interval type": `{"device_code":"d","user_code":"A","verification_uri":"https://x/d","expires_in":600,"interval":"x"}`,
	} {
		t.Run(name, func(t *testing.T) {
			srv, _ := server(t, answer)
			_, err := client(srv, &fakeClock{now: time.Now()}).Authorize(context.Background(), []string{"openid", "offline_access"})
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestAuthorizeDefaultsTheInterval(t *testing.T) {
	srv, _ := server(t, `{"device_code":"dev-code-xyz","user_code":"A","verification_uri":"https://x/d","expires_in":600}`)
	a, err := client(srv, &fakeClock{now: time.Now()}).Authorize(context.Background(), []string{"openid", "offline_access"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Interval != 5*time.Second {
		t.Errorf("interval = %s", a.Interval)
	}
	if strings.Contains(fmt.Sprintf("%v %s %+v", a, a, a), "dev-code-xyz") {
		t.Errorf("String shows the device code: %s", a)
	}
}

func TestOAuthErrorOfTheDeviceEndpoint(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(401)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"})
	}))
	defer srv.Close()
	c := &Client{HTTP: srv.Client(), DeviceAuthorizationURL: srv.URL, TokenURL: srv.URL, ClientID: "cli", ClientSecret: secret}
	_, err := c.Authorize(context.Background(), nil)
	if CodeOf(err) != "invalid_client" || !strings.Contains(err.Error(), "HTTP 401") {
		t.Fatalf("err = %v", err)
	}
}

func TestTokenStringHidesSecrets(t *testing.T) {
	tok := &Token{AccessToken: "AT-secret", RefreshToken: "RT-secret", Scope: "openid"}
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok)} {
		if strings.Contains(s, "secret") {
			t.Errorf("printed a token: %s", s)
		}
	}
}
