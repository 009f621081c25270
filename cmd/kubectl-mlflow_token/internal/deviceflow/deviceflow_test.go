package deviceflow

// The polling rules (interval, slow_down, back-off, expiry) are tested here against an httptest
// server that answers a scripted sequence: a real Keycloak cannot be made to answer slow_down or
// 503 on cue. x/oauth2 polls on a real ticker in whole seconds, so these tests take real time
// (about 8 s, in parallel); the waits are measured at the server. The real Keycloak flow is
// tested in test/integration (TestPluginBootstrap*).

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

const (
	secret    = "s%+&= ecret"
	assertion = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln"
)

// fakeServer answers the device authorization once and then the token requests from script, one
// entry per request ("pending", "slow_down", "denied", "expired", "503", "drop", "token",
// "invalid_grant"). It checks every request's client authentication.
type fakeServer struct {
	t         *testing.T
	srv       *httptest.Server
	assertion bool // expect a client assertion instead of the secret
	device    string
	script    []string
	onPoll    func(n int) // called before answering the n-th token request (1-based)

	mu    sync.Mutex
	polls []time.Time
}

func newServer(t *testing.T, deviceAnswer string, script ...string) *fakeServer {
	t.Helper()
	f := &fakeServer{t: t, device: deviceAnswer, script: script}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	t := f.t
	if r.Header.Get("Authorization") != "" {
		t.Error("credentials sent in an Authorization header; they must travel in the form body")
	}
	if err := r.ParseForm(); err != nil {
		t.Error(err)
	}
	f.checkClientAuth(r)
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
		fmt.Fprint(w, f.device)
	case "/token":
		if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code" || r.PostForm.Get("device_code") != "dev-code" {
			t.Errorf("token request form = %v", r.PostForm)
		}
		if r.PostForm.Has("scope") {
			t.Errorf("the token request repeats the scope: %v", r.PostForm)
		}
		f.mu.Lock()
		f.polls = append(f.polls, time.Now())
		n := len(f.polls)
		f.mu.Unlock()
		if f.onPoll != nil {
			f.onPoll(n)
		}
		step := "token"
		if n <= len(f.script) {
			step = f.script[n-1]
		}
		switch step {
		case "pending":
			oauthErr(400, "authorization_pending")
		case "slow_down":
			oauthErr(400, "slow_down")
		case "denied":
			oauthErr(400, ErrorAccessDenied)
		case "expired":
			oauthErr(400, ErrorExpiredToken)
		case "invalid_grant":
			oauthErr(400, "invalid_grant")
		case "503":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(503)
			fmt.Fprint(w, "<html>busy body-must-not-show</html>")
		case "drop": // the connection breaks: no answer at all
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		default:
			fmt.Fprint(w, `{"access_token":"AT-secret","refresh_token":"RT-secret","token_type":"Bearer","scope":"openid offline_access","expires_in":300,"refresh_expires_in":0}`)
		}
	default:
		http.NotFound(w, r)
	}
}

// checkClientAuth: a confidential client authenticates at both endpoints, in the form body.
func (f *fakeServer) checkClientAuth(r *http.Request) {
	form := r.PostForm
	if form.Get("client_id") != "cli" {
		f.t.Errorf("%s: client_id = %q", r.URL.Path, form.Get("client_id"))
	}
	if f.assertion {
		if form.Has("client_secret") || form.Get("client_assertion") != assertion ||
			form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			f.t.Errorf("%s: client assertion in the form = %v", r.URL.Path, form)
		}
		return
	}
	if form.Get("client_secret") != secret || form.Has("client_assertion") {
		f.t.Errorf("%s: client secret in the form = %v", r.URL.Path, form)
	}
}

// gaps are the times between the device authorization's answer (start) and each poll.
func (f *fakeServer) gaps(start time.Time) []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Duration
	prev := start
	for _, p := range f.polls {
		out = append(out, p.Sub(prev))
		prev = p
	}
	return out
}

func (f *fakeServer) client() *Client {
	c := &Client{HTTP: f.srv.Client(), DeviceAuthorizationURL: f.srv.URL + "/device", TokenURL: f.srv.URL + "/token", ClientID: "cli"}
	if f.assertion {
		c.ClientAssertion = assertion
	} else {
		c.ClientSecret = secret
	}
	return c
}

const goodDevice = `{"device_code":"dev-code","user_code":"ABCD-EFGH","verification_uri":"https://kc.example/realms/r/device","verification_uri_complete":"https://kc.example/realms/r/device?user_code=ABCD-EFGH","expires_in":600,"interval":1}`

// run authorizes and polls; it returns the token, the error and the waits before each poll.
func (f *fakeServer) run(ctx context.Context) (*Token, error, []time.Duration) {
	f.t.Helper()
	c := f.client()
	a, err := c.Authorize(ctx, []string{"openid", "offline_access"})
	if err != nil {
		f.t.Fatal(err)
	}
	start := time.Now()
	tok, err := c.Poll(ctx, a)
	return tok, err, f.gaps(start)
}

// within: each wait is at least want[i] and not much longer (the ticker is real time).
func within(t *testing.T, got []time.Duration, want ...time.Duration) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d polls (waits %v), want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] < want[i]-50*time.Millisecond || got[i] > want[i]+900*time.Millisecond {
			t.Errorf("wait before poll %d: %s, want %s (all: %v)", i+1, got[i].Round(time.Millisecond), want[i], got)
		}
	}
}

func TestPollHonoursIntervalAndSlowDown(t *testing.T) {
	t.Parallel()
	tok, err, gaps := newServer(t, goodDevice, "pending", "slow_down", "token").run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "AT-secret" || tok.RefreshToken != "RT-secret" || tok.ExpiresIn != 300*time.Second || tok.Scope != "openid offline_access" {
		t.Errorf("token = %v", tok)
	}
	// interval 1 s; a slow_down adds 5 s.
	within(t, gaps, time.Second, time.Second, 6*time.Second)
}

// A 5xx or a broken connection does not end the login: the interval doubles and polling goes on.
func TestPollBacksOffWhenTheServerFails(t *testing.T) {
	t.Parallel()
	_, err, gaps := newServer(t, goodDevice, "503", "drop", "token").run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	within(t, gaps, time.Second, 2*time.Second, 4*time.Second)
}

func TestPollOutcomes(t *testing.T) {
	t.Parallel()
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
			t.Parallel()
			tok, err, _ := newServer(t, goodDevice, tc.script...).run(context.Background())
			if tok != nil || CodeOf(err) != tc.code {
				t.Fatalf("got %v, %v; want code %s", tok, err, tc.code)
			}
			if !strings.Contains(err.Error(), "described "+tc.code) || !strings.Contains(err.Error(), "HTTP 400") {
				t.Errorf("the server's status or description is missing: %v", err)
			}
		})
	}
}

// The code's lifetime runs out while the server still says pending: Poll stops by itself, and an
// invalid_grant just before the expiry (Keycloak forgets expired codes) is reported as expired.
func TestPollStopsWhenTheCodeExpires(t *testing.T) {
	t.Parallel()
	short := strings.Replace(goodDevice, `"expires_in":600`, `"expires_in":2`, 1)
	t.Run("pending", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		_, err, gaps := newServer(t, short, "pending", "pending", "pending", "pending").run(context.Background())
		if CodeOf(err) != ErrorExpiredToken || !strings.Contains(err.Error(), "the code expired before the login was completed") {
			t.Fatalf("err = %v", err)
		}
		if len(gaps) > 2 || time.Since(start) > 3*time.Second {
			t.Errorf("polled %d times over %s after a 2 s code", len(gaps), time.Since(start))
		}
	})
	t.Run("server failing", func(t *testing.T) {
		t.Parallel()
		_, err, _ := newServer(t, short, "503", "503", "503").run(context.Background())
		if CodeOf(err) != ErrorExpiredToken || !strings.Contains(err.Error(), "(the last poll failed: token endpoint answered HTTP 503)") {
			t.Fatalf("a server failing until the code expired: %v", err)
		}
	})
	t.Run("invalid_grant", func(t *testing.T) {
		t.Parallel()
		_, err, _ := newServer(t, short, "invalid_grant").run(context.Background())
		if CodeOf(err) != ErrorExpiredToken || !strings.Contains(err.Error(), "described invalid_grant") {
			t.Fatalf("invalid_grant at the expiry: %v", err)
		}
	})
}

func TestPollStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	f := newServer(t, goodDevice, "pending", "pending", "pending", "pending")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.onPoll = func(n int) {
		if n == 2 {
			cancel()
		}
	}
	if _, err, gaps := f.run(ctx); err != context.Canceled || len(gaps) != 2 {
		t.Fatalf("err = %v after %d polls", err, len(gaps))
	}
}

// A client with federated client authentication sends its assertion at both endpoints, and no
// secret.
func TestClientAssertion(t *testing.T) {
	t.Parallel()
	f := newServer(t, goodDevice, "token")
	f.assertion = true
	if tok, err, _ := f.run(context.Background()); err != nil || tok.RefreshToken != "RT-secret" {
		t.Fatalf("%v %v", tok, err)
	}
}

func TestAuthorizeRejectsUnusableAnswers(t *testing.T) {
	t.Parallel()
	for name, answer := range map[string]string{
		"no device code":       `{"user_code":"A","verification_uri":"https://x/d","expires_in":600}`,
		"javascript URI":       `{"device_code":"d","user_code":"A","verification_uri":"javascript:alert(1)","expires_in":600}`,
		"escape in user code":  `{"device_code":"d","user_code":"A\u001b[2J","verification_uri":"https://x/d","expires_in":600}`,
		"escape in complete":   `{"device_code":"d","user_code":"A","verification_uri":"https://x/d","verification_uri_complete":"https://x/d?\u001b]0;","expires_in":600}`,
		"no expiry":            `{"device_code":"d","user_code":"A","verification_uri":"https://x/d"}`,
		"not an object":        `[1,2]`,
		"not JSON":             `<html>hello</html>`,
		"negative expires_in":  `{"device_code":"d","user_code":"A","verification_uri":"https://x/d","expires_in":-1}`,
		"absurd interval type": `{"device_code":"d","user_code":"A","verification_uri":"https://x/d","expires_in":600,"interval":"x"}`,
	} {
		t.Run(name, func(t *testing.T) {
			f := newServer(t, answer)
			_, err := f.client().Authorize(context.Background(), []string{"openid", "offline_access"})
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), `"d"`) || strings.Contains(err.Error(), "hello") {
				t.Errorf("the error quotes the answer: %v", err)
			}
		})
	}
}

func TestAuthorizeDefaultsTheInterval(t *testing.T) {
	t.Parallel()
	f := newServer(t, `{"device_code":"dev-code-xyz","user_code":"A","verification_uri":"https://x/d","expires_in":600}`)
	a, err := f.client().Authorize(context.Background(), []string{"openid", "offline_access"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Interval != 5*time.Second || time.Until(a.ExpiresAt) < 590*time.Second {
		t.Errorf("interval = %s, expires in %s", a.Interval, time.Until(a.ExpiresAt))
	}
	if strings.Contains(fmt.Sprintf("%v %s %+v", a, a, a), "dev-code-xyz") {
		t.Errorf("String shows the device code: %s", a)
	}
}

func TestOAuthErrorOfTheDeviceEndpoint(t *testing.T) {
	t.Parallel()
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

// Errors without an OAuth code say what happened without quoting the body; a missing endpoint
// (404) hints at the URL or realm; no answer at all names the transport's failure.
func TestErrorsWithoutAnOAuthCode(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(502)
		fmt.Fprint(w, "<html>proxy body-must-not-show</html>")
	}))
	defer srv.Close()
	for path, want := range map[string]string{
		"/missing": "device authorization endpoint answered HTTP 404: not found (wrong URL or realm?)",
		"/bad":     "device authorization endpoint answered HTTP 502",
	} {
		c := &Client{HTTP: srv.Client(), DeviceAuthorizationURL: srv.URL + path, ClientID: "cli", ClientSecret: secret}
		_, err := c.Authorize(context.Background(), nil)
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", path, err, want)
		}
	}
	c := &Client{DeviceAuthorizationURL: "http://127.0.0.1:1/device", ClientID: "cli", ClientSecret: secret}
	if _, err := c.Authorize(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("unreachable: %v", err)
	}
}

func TestTokenStringHidesSecrets(t *testing.T) {
	t.Parallel()
	tok := &Token{AccessToken: "AT-secret", RefreshToken: "RT-secret", Scope: "openid"}
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok)} {
		if strings.Contains(s, "secret") {
			t.Errorf("printed a token: %s", s)
		}
	}
}
