package mlflowcheck

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
)

// A token as Keycloak issues it for the e2e realm's operator client: MLflow's audience, the
// service account's name, group mlflow_users.
func goodClaims() map[string]any {
	return map[string]any{
		"jti": "jti-1", "iss": "https://keycloak.example.com/realms/mlflow", "azp": "mlflow-operator",
		"aud": []string{"mlflow-operator", "mlflow"}, "preferred_username": "service-account-mlflow-operator",
		"groups": []string{"mlflow_users"}, "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
	}
}

func jwtWith(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc(b) + ".c2lnbmF0dXJlLW5vdC1jaGVja2Vk"
}

func with(mutate func(map[string]any)) string {
	c := goodClaims()
	mutate(c)
	return jwtWith(c)
}

// harness runs a Checker with a log buffer and a notification channel.
type harness struct {
	t     *testing.T
	c     *Checker
	done  chan types.NamespacedName
	logs  *syncBuf
	stop  func()
	clock *clocktesting.FakeClock
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) add(prefix, args string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(prefix + " " + args + "\n")
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newHarness(t *testing.T, o Options, start bool) *harness {
	t.Helper()
	h := &harness{t: t, done: make(chan types.NamespacedName, 100), logs: &syncBuf{}, clock: clocktesting.NewFakeClock(time.Now())}
	o.Log = funcr.New(h.logs.add, funcr.Options{Verbosity: 10})
	o.Clock = h.clock
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	h.c = New(o, func(ctx context.Context, key types.NamespacedName) {
		select {
		case h.done <- key:
		case <-ctx.Done():
		}
	})
	if start {
		h.start()
	}
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = h.c.Start(ctx); close(stopped) }()
	h.stop = func() { cancel(); <-stopped }
	h.t.Cleanup(h.stop)
}

var key = types.NamespacedName{Namespace: "team-a", Name: "train"}

// check submits one request and waits for its result.
func (h *harness) check(uri, token string, ca []byte) Result {
	h.t.Helper()
	h.c.Submit(Request{Key: key, TrackingURI: uri, Token: token, TokenID: "jti:" + token[len(token)-6:], CABundle: ca})
	return h.wait(key)
}

func (h *harness) wait(k types.NamespacedName) Result {
	h.t.Helper()
	select {
	case got := <-h.done:
		if got != k {
			h.t.Fatalf("notified for %s, want %s", got, k)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatal("no result after 30s")
	}
	res, _ := h.c.Lookup(k)
	if res == nil {
		h.t.Fatal("notified, but no result stored")
	}
	return *res
}

// mlflow is a stand-in for the tracking server: it answers the current-user endpoint with
// currentUser, records what it was sent, and fails the test on any token other than want.
type mlflow struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string
	auth     []string
}

func newMLflow(t *testing.T, handler http.HandlerFunc) *mlflow {
	m := &mlflow{}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.requests = append(m.requests, r.Method+" "+r.URL.RequestURI())
		m.auth = append(m.auth, r.Header.Get("Authorization"))
		m.mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(m.Close)
	return m
}

func (m *mlflow) seen() ([]string, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.requests...), append([]string(nil), m.auth...)
}

func respond(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func wantContains(t *testing.T, what, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Errorf("%s %q does not contain %q", what, s, p)
		}
	}
}

func TestAccepted(t *testing.T) {
	for _, tc := range []struct{ name, body, user string }{
		{"mlflow-oidc-auth", `{"id":3,"username":"service-account-mlflow-operator","display_name":"x","is_admin":false,"is_service_account":false,"groups":[]}`, "service-account-mlflow-operator"},
		{"MLflow basic-auth app", `{"user":{"id":1,"username":"alice","is_admin":false},"is_basic_auth":false}`, "alice"},
		{"unreadable body", `<html>`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := jwtWith(goodClaims())
			m := newMLflow(t, respond(200, tc.body))
			h := newHarness(t, Options{}, true)
			res := h.check(m.URL+"/", tok, nil)
			if res.Outcome != Accepted || res.Status != 200 || res.User != tc.user || res.TrackingURI != m.URL+"/" || res.CheckedAt.IsZero() {
				t.Fatalf("result %+v", res)
			}
			wantContains(t, "message", res.Message, "accepts the token", m.URL)
			if tc.user != "" {
				wantContains(t, "message", res.Message, `as user "`+tc.user+`"`)
			}
			reqs, auth := m.seen()
			if len(reqs) != 1 || reqs[0] != "GET /api/2.0/mlflow/users/current" || auth[0] != "Bearer "+tok {
				t.Fatalf("MLflow saw %q with %d auth headers", reqs, len(auth))
			}
		})
	}
}

func TestRejected(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header []string
		token  string
		want   []string
		not    []string
	}{
		{name: "no audience claim", status: 401, token: with(func(c map[string]any) { delete(c, "aud") }),
			want: []string{"answered 401", "Likely cause", "no aud claim", "OIDC_AUDIENCE", "audience mapper", "Otherwise check", "OIDC_ISSUER", `"service-account-mlflow-operator"`}},
		{name: "only Keycloak's account audience", status: 401, token: with(func(c map[string]any) { c["aud"] = "account" }),
			want: []string{"Likely cause", "audience [account]", "OIDC_AUDIENCE must be one of the token's audiences"}},
		{name: "no groups claim", status: 401, token: with(func(c map[string]any) { delete(c, "groups") }),
			want: []string{"Likely cause", "no groups claim", "OIDC_GROUP_NAME", "group-membership mapper", "OIDC_AUDIENCE must be one of aud [mlflow-operator mlflow]"},
			not:  []string{"no aud claim"}},
		{name: "no user name claim", status: 401, token: with(func(c map[string]any) { delete(c, "preferred_username") }),
			want: []string{"Likely cause", "neither email nor preferred_username", "OIDC_USERNAME_FIELD"}},
		{name: "email names the user", status: 401, token: with(func(c map[string]any) { c["email"] = "sa@example.com" }),
			want: []string{`calls this user "sa@example.com" (from email)`}},
		{name: "claims look right: the settings are listed", status: 401, token: jwtWith(goodClaims()),
			want: []string{"no likely cause", `OIDC_ISSUER must equal iss "https://keycloak.example.com/realms/mlflow" exactly`,
				`calls this user "service-account-mlflow-operator" (from preferred_username)`, "OIDC_PROVISION_ON_BEARER_AUTH",
				"groups [mlflow_users] must include OIDC_GROUP_NAME"},
			not: []string{"Likely cause"}},
		{name: "403", status: 403, token: jwtWith(goodClaims()),
			want: []string{"answered 403 Forbidden", "a proxy in front of it", "OIDC_ISSUER"}},
		{name: "basic auth server", status: 401, header: []string{"WWW-Authenticate", `Basic realm="mlflow"`}, token: jwtWith(goodClaims()),
			want: []string{"Basic authentication", "--app-name oidc-auth"}, not: []string{"OIDC_AUDIENCE"}},
		{name: "not a JWT", status: 401, token: "opaque-token-0123456789",
			want: []string{"not a JWT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMLflow(t, respond(tc.status, `{"detail":"Authentication required"}`, tc.header...))
			h := newHarness(t, Options{}, true)
			res := h.check(m.URL, tc.token, nil)
			if res.Outcome != Rejected || res.Status != tc.status {
				t.Fatalf("result %+v", res)
			}
			wantContains(t, "message", res.Message, tc.want...)
			for _, n := range tc.not {
				if strings.Contains(res.Message, n) {
					t.Errorf("message %q contains %q", res.Message, n)
				}
			}
			if len(res.Message) > 1024 {
				t.Errorf("message of %d bytes: longer than a condition message may be", len(res.Message))
			}
			t.Logf("%d bytes: %s", len(res.Message), res.Message)
		})
	}
}

func TestExplainExpired(t *testing.T) {
	c := claimsOf(jwtWith(goodClaims()))
	msg := explain("https://mlflow.example.com", 401, http.Header{}, c, c.ExpiresAt.Add(time.Second))
	wantContains(t, "message", msg, "Likely cause", "the token expired at "+c.ExpiresAt.UTC().Format(time.RFC3339))
}

func TestNoAnswer(t *testing.T) {
	slow := make(chan struct{})
	t.Cleanup(func() { close(slow) })
	refused := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		uri     string
		outcome Outcome
		want    []string
	}{
		{name: "500", handler: respond(500, `{"error_code":"INTERNAL_ERROR","message":"database is locked"}`), outcome: Unreachable,
			want: []string{"answered 500 Internal Server Error: database is locked", "checked again"}},
		{name: "503 without a body", handler: respond(503, ``), outcome: Unreachable, want: []string{"answered 503 Service Unavailable;"}},
		{name: "429", handler: respond(429, `{}`), outcome: Unreachable, want: []string{"answered 429 Too Many Requests"}},
		{name: "timeout", handler: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-slow:
			case <-r.Context().Done():
			}
		}, outcome: Unreachable, want: []string{"did not answer in time"}},
		{name: "connection refused", uri: refused(), outcome: Unreachable, want: []string{"Could not reach MLflow at", "connection refused"}},
		{name: "redirect to a login page", handler: respond(302, ``, "Location", "https://sso.example.com/login?state=s3cr3t&next=/"), outcome: Unexpected,
			want: []string{"answered 302 redirecting to https://sso.example.com/login instead of answering", "browser login"}},
		{name: "400", handler: respond(400, `{"detail":"bad"}`), outcome: Unexpected, want: []string{"answered 400 Bad Request: bad to /api/2.0/mlflow/users/current"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			uri := tc.uri
			if uri == "" {
				uri = newMLflow(t, tc.handler).URL
			}
			h := newHarness(t, Options{Timeout: 300 * time.Millisecond}, true)
			res := h.check(uri, jwtWith(goodClaims()), nil)
			if res.Outcome != tc.outcome {
				t.Fatalf("result %+v", res)
			}
			wantContains(t, "message", res.Message, tc.want...)
			if strings.Contains(res.Message, "s3cr3t") {
				t.Errorf("message %q shows the redirect's query", res.Message)
			}
		})
	}
}

// A server without the current-user endpoint (MLflow without an auth app, behind a proxy): one
// experiment search answers instead.
func TestNoCurrentUserEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name    string
		search  int
		outcome Outcome
		want    string
	}{
		{"search accepted", 200, Accepted, "an experiment search succeeded"},
		{"search rejected", 401, Rejected, "answered 401"},
		{"not MLflow at all", 404, Unexpected, "is spec.mlflow.trackingURI the MLflow server's base URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMLflow(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/api/2.0/mlflow/experiments/search" {
					respond(tc.search, `{"experiments":[]}`)(w, r)
					return
				}
				http.NotFound(w, r)
			})
			h := newHarness(t, Options{}, true)
			res := h.check(m.URL, jwtWith(goodClaims()), nil)
			if res.Outcome != tc.outcome {
				t.Fatalf("result %+v", res)
			}
			wantContains(t, "message", res.Message, tc.want)
			if reqs, _ := m.seen(); len(reqs) != 2 || reqs[1] != "GET /api/2.0/mlflow/experiments/search?max_results=1" {
				t.Fatalf("MLflow saw %q", reqs)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewTLSServer(respond(200, `{"username":"u"}`))
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	h := newHarness(t, Options{}, true)
	if res := h.check(srv.URL, jwtWith(goodClaims()), nil); res.Outcome != Unreachable || !strings.Contains(res.Message, "certificate") {
		t.Fatalf("without the CA: %+v", res)
	}
	if res := h.check(srv.URL, jwtWith(goodClaims()), ca); res.Outcome != Accepted {
		t.Fatalf("with the CA bundle: %+v", res)
	}
}

// A token that expires while it waits for its turn is not sent.
func TestExpiredBeforeItsTurn(t *testing.T) {
	m := newMLflow(t, respond(200, `{}`))
	h := newHarness(t, Options{}, true)
	h.clock.Step(2 * time.Hour)
	res := h.check(m.URL, jwtWith(goodClaims()), nil)
	if res.Outcome != Expired {
		t.Fatalf("result %+v", res)
	}
	if reqs, _ := m.seen(); len(reqs) != 0 {
		t.Fatalf("an expired token was sent: %q", reqs)
	}
}

// A newer token replaces the pending check of an older one; a token submitted while the older
// one's check runs is checked after it.
func TestDeduplicated(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	m := newMLflow(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-release
		}
		respond(200, `{}`)(w, r)
	})
	tok := func(n int) string { return with(func(c map[string]any) { c["jti"] = fmt.Sprint(n) }) }
	req := func(n int) Request {
		return Request{Key: key, TrackingURI: m.URL, Token: tok(n), TokenID: fmt.Sprintf("jti:%d", n)}
	}
	h := newHarness(t, Options{Workers: 4}, false)
	h.c.Submit(req(1))
	h.c.Submit(req(2))
	if _, pending := h.c.Lookup(key); pending != "jti:2" {
		t.Fatalf("pending %q, want jti:2", pending)
	}
	h.start()
	waitFor(t, func() bool { return calls.Load() == 1 })
	if _, pending := h.c.Lookup(key); pending != "jti:2" {
		t.Fatalf("while running: pending %q, want jti:2", pending)
	}
	h.c.Submit(req(3)) // while 2 is being checked
	h.c.Submit(req(4)) // replaces 3
	close(release)
	if res := h.wait(key); res.TokenID != "jti:2" {
		t.Fatalf("first result for %s", res.TokenID)
	}
	if res := h.wait(key); res.TokenID != "jti:4" {
		t.Fatalf("second result for %s", res.TokenID)
	}
	_, auth := m.seen()
	if len(auth) != 2 || auth[0] != "Bearer "+tok(2) || auth[1] != "Bearer "+tok(4) {
		t.Fatalf("%d requests; want the tokens 2 and 4 only", len(auth))
	}
	if _, pending := h.c.Lookup(key); pending != "" {
		t.Fatalf("pending %q after all checks", pending)
	}
}

// The token bucket holds back requests beyond the burst: with a rate of one per 1000 s and a
// burst of 2, five resources get two checks, and the other three wait (and are dropped, without a
// result, when the checker stops).
func TestRateLimited(t *testing.T) {
	var calls atomic.Int32
	m := newMLflow(t, func(w http.ResponseWriter, r *http.Request) { calls.Add(1); respond(200, `{}`)(w, r) })
	h := newHarness(t, Options{Workers: 4, QPS: 0.001, Burst: 2}, true)
	for i := range 5 {
		h.c.Submit(Request{Key: types.NamespacedName{Namespace: "ns", Name: fmt.Sprint(i)}, TrackingURI: m.URL, Token: jwtWith(goodClaims()), TokenID: "x"})
	}
	for range 2 {
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
			t.Fatal("the burst was not served")
		}
	}
	// The third request would need a token 1000 s from now: none comes in a quarter second,
	// however loaded the machine (this cannot pass by being slow, only fail if the limit is broken).
	time.Sleep(250 * time.Millisecond)
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d requests, want the burst of 2", n)
	}
	h.stop()
	stored := 0
	for i := range 5 {
		if res, _ := h.c.Lookup(types.NamespacedName{Namespace: "ns", Name: fmt.Sprint(i)}); res != nil {
			stored++
		}
	}
	if stored != 2 {
		t.Fatalf("%d results stored, want 2 (checks cut short by the stop leave none)", stored)
	}
}

func TestBoundedStore(t *testing.T) {
	m := newMLflow(t, respond(200, `{}`))
	h := newHarness(t, Options{MaxResults: 2}, true)
	keys := []types.NamespacedName{{Namespace: "a", Name: "1"}, {Namespace: "a", Name: "2"}, {Namespace: "a", Name: "3"}}
	for _, k := range keys {
		h.c.Submit(Request{Key: k, TrackingURI: m.URL, Token: jwtWith(goodClaims()), TokenID: "x"})
		h.wait(k)
	}
	if res, _ := h.c.Lookup(keys[0]); res != nil {
		t.Error("the oldest result was kept beyond MaxResults")
	}
	for _, k := range keys[1:] {
		if res, _ := h.c.Lookup(k); res == nil {
			t.Errorf("result of %s dropped", k)
		}
	}
	h.c.Forget(keys[2])
	if res, _ := h.c.Lookup(keys[2]); res != nil {
		t.Error("Forget kept the result")
	}
}

// No result message and no log line, at any verbosity, holds the token, whatever MLflow answers
// (even a server that echoes the Authorization header back).
func TestTokenNeverInResultsOrLogs(t *testing.T) {
	tok := jwtWith(goodClaims())
	echo := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := json.Marshal(map[string]string{"message": "you sent " + r.Header.Get("Authorization"), "username": r.Header.Get("Authorization")})
			respond(status, string(b))(w, r)
		}
	}
	h := newHarness(t, Options{Timeout: 300 * time.Millisecond}, true)
	var msgs []string
	for _, hd := range []http.HandlerFunc{echo(200), echo(401), echo(403), echo(500), echo(418), respond(302, ``, "Location", "/login?t="+tok)} {
		res := h.check(newMLflow(t, hd).URL, tok, nil)
		msgs = append(msgs, res.Message, res.User)
	}
	all := strings.Join(msgs, "\n") + h.logs.String()
	payload := strings.Split(tok, ".")[1]
	if strings.Contains(all, payload) {
		t.Fatalf("the token's payload appears in results or logs:\n%s", all)
	}
	if !strings.Contains(h.logs.String(), "MLflow rejected the token") {
		t.Fatalf("the log was not captured: %q", h.logs.String())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A tracking URI may be 2048 characters long; the explanation must still fit a condition message.
func TestLongTrackingURI(t *testing.T) {
	uri := "https://mlflow.example.com/" + strings.Repeat("p", 2000)
	c := claimsOf(with(func(c map[string]any) { delete(c, "aud"); delete(c, "groups") }))
	msg := explain(uri, 401, http.Header{}, c, time.Now())
	if len(msg) > 1024 || strings.Contains(msg, "ppp") {
		t.Fatalf("%d bytes: %s", len(msg), msg)
	}
	wantContains(t, "message", msg, "no aud claim", "no groups claim")
}
