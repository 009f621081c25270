package fault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault is what the proxy does with requests.
type Fault string

const (
	PassThrough    Fault = "pass-through"
	Refuse         Fault = "refuse"          // listener closed: connection refused
	Delay          Fault = "delay"           // answer later than the operator's timeout
	Reset          Fault = "reset"           // TCP RST instead of an answer
	HTML502        Fault = "html-502"        // a load balancer's HTML error page
	TruncatedJSON  Fault = "truncated-json"  // 200 with half a JSON document
	HugeBody       Fault = "10mb-body"       // 200 with a 10 MB JSON body
	NotJWT         Fault = "not-a-jwt"       // 200 with an opaque access token
	ExpiresMissing Fault = "expires-missing" // the real answer without expires_in
	ExpiresZero    Fault = "expires-0"
	ExpiresNeg     Fault = "expires-neg5"
	ExpiresYears   Fault = "expires-10y"    // ten years: above the operator's one-year cap
	ExpiresHuge    Fault = "expires-2pow40" // overflows time.Duration when multiplied by a second
)

// Proxy is a fault-injecting reverse proxy in front of the real Keycloak. It counts requests
// per path and, for the refresh grant, per refresh token (SHA-256 of the form value), so that a
// double redemption shows.
type Proxy struct {
	target *url.URL
	rp     *httputil.ReverseProxy
	addr   string

	mu       sync.Mutex
	fault    Fault
	srv      *http.Server
	paths    map[string]int
	grants   map[string]int // token endpoint POSTs by grant_type
	grantsOK map[string]int // ... that Keycloak answered 200
	rtPosts  map[string]int // refresh_token redemptions by token hash
	rtOK     map[string]int // ... that Keycloak answered 200
	// reusedAfterOK counts redemptions of a refresh token Keycloak had already rotated (a double
	// redemption); rtInvalid counts invalid_grant answers to refresh grants.
	reusedAfterOK int
	rtInvalid     int
	onRefresh     func(rtHash string) // called (once, then cleared) for a refresh grant
	onRefreshAt   HookPoint
}

// HookPoint says where OnNextRefresh's function runs and what happens to the request then.
type HookPoint int

const (
	// HookThenForward: the function runs when the grant arrives; then the grant is forwarded.
	HookThenForward HookPoint = iota
	// HookThenDrop: the function runs when the grant arrives; the grant never reaches Keycloak
	// (a process killed before its request left the machine).
	HookThenDrop
	// HookOnAnswer: the grant is forwarded; the function runs when Keycloak's answer arrives,
	// before it is relayed (a process killed after Keycloak rotated the refresh token).
	HookOnAnswer
)

type ctxKey struct{}

type reqInfo struct {
	grant    string
	rtHash   string
	onAnswer func(rtHash string) // HookOnAnswer's function, for this request
}

// NewProxy listens on a free loopback port and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: u, addr: ln.Addr().String(), fault: PassThrough}
	p.ResetCounts()
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host // Keycloak writes the requested host into iss
		},
		ModifyResponse: p.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// Keycloak down: the client sees what it would see without the proxy, a failed
			// connection, not a 502 from a proxy that does not exist in production.
			resetConn(w)
		},
	}
	p.serve(ln)
	return p, nil
}

func (p *Proxy) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(p.handle), ReadHeaderTimeout: 10 * time.Second}
	p.srv = srv
	go func() { _ = srv.Serve(ln) }()
}

// URL is the base URL resources use.
func (p *Proxy) URL() string { return "http://" + p.addr }

// Close stops the proxy.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		_ = p.srv.Close()
		p.srv = nil
	}
}

// SetFault switches the proxy's behaviour. Refuse closes the listener; switching away from it
// listens on the same port again.
func (p *Proxy) SetFault(f Fault) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f == Refuse && p.srv != nil {
		_ = p.srv.Close()
		p.srv = nil
	}
	if f != Refuse && p.srv == nil {
		var ln net.Listener
		var err error
		for i := 0; i < 50; i++ { // the port may linger for a moment
			if ln, err = net.Listen("tcp", p.addr); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return err
		}
		p.serve(ln)
	}
	p.fault = f
	return nil
}

func (p *Proxy) currentFault() Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault
}

// OnNextRefresh registers f to run once, for the next refresh grant, at the given point. f gets
// the SHA-256 (hex) of the refresh token in that grant.
func (p *Proxy) OnNextRefresh(at HookPoint, f func(rtHash string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onRefresh, p.onRefreshAt = f, at
}

// RefreshOK is how many times Keycloak answered 200 to a refresh grant with the refresh token
// whose SHA-256 is rtHash.
func (p *Proxy) RefreshOK(rtHash string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rtOK[rtHash]
}

// ResetCounts zeroes every counter.
func (p *Proxy) ResetCounts() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paths, p.grants, p.grantsOK = map[string]int{}, map[string]int{}, map[string]int{}
	p.rtPosts, p.rtOK = map[string]int{}, map[string]int{}
	p.reusedAfterOK, p.rtInvalid = 0, 0
}

// Counts is a snapshot of the proxy's counters.
type Counts struct {
	Total    int
	Paths    map[string]int
	Grants   map[string]int
	GrantsOK map[string]int
	// RefreshTokensPostedTwice: refresh tokens POSTed more than once (a retry after a failed
	// attempt that Keycloak never answered is one of these, and harmless).
	RefreshTokensPostedTwice int
	// DoubleRedemptions: refresh tokens POSTed again after Keycloak had rotated them.
	DoubleRedemptions int
	// RefreshInvalidGrant: refresh grants Keycloak rejected with invalid_grant.
	RefreshInvalidGrant int
}

// Counts returns a snapshot.
func (p *Proxy) Counts() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := Counts{Paths: map[string]int{}, Grants: map[string]int{}, GrantsOK: map[string]int{},
		DoubleRedemptions: p.reusedAfterOK, RefreshInvalidGrant: p.rtInvalid}
	for k, v := range p.paths {
		c.Paths[k] = v
		c.Total += v
	}
	for k, v := range p.grants {
		c.Grants[k] = v
	}
	for k, v := range p.grantsOK {
		c.GrantsOK[k] = v
	}
	for _, v := range p.rtPosts {
		if v > 1 {
			c.RefreshTokensPostedTwice++
		}
	}
	return c
}

func isTokenEndpoint(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/protocol/openid-connect/token")
}

func (p *Proxy) handle(w http.ResponseWriter, r *http.Request) {
	var info reqInfo
	if isTokenEndpoint(r) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		info.grant = form.Get("grant_type")
		var hook func(string)
		drop := false
		p.mu.Lock()
		p.grants[info.grant]++
		if info.grant == "refresh_token" {
			sum := sha256.Sum256([]byte(form.Get("refresh_token")))
			info.rtHash = hex.EncodeToString(sum[:])
			p.rtPosts[info.rtHash]++
			if p.rtOK[info.rtHash] > 0 {
				p.reusedAfterOK++
			}
			if p.onRefresh != nil {
				switch p.onRefreshAt {
				case HookOnAnswer:
					info.onAnswer = p.onRefresh
				case HookThenDrop:
					hook, drop = p.onRefresh, true
				default:
					hook = p.onRefresh
				}
				p.onRefresh = nil
			}
		}
		p.mu.Unlock()
		if hook != nil {
			hook(info.rtHash)
		}
		if drop {
			resetConn(w)
			return
		}
	}
	p.mu.Lock()
	p.paths[r.URL.Path]++
	f := p.fault
	p.mu.Unlock()

	switch f {
	case Delay:
		select {
		case <-r.Context().Done():
			return
		case <-time.After(3 * keycloakTimeout):
		}
	case Reset:
		resetConn(w)
		return
	}
	if isTokenEndpoint(r) {
		switch f {
		case HTML502:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n")
			return
		case TruncatedJSON:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token":"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJle`)
			return
		case HugeBody:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"token_type":"Bearer","expires_in":300,"access_token":"`)
			chunk := bytes.Repeat([]byte("A"), 64<<10)
			for i := 0; i < 160; i++ { // 10 MB
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			_, _ = io.WriteString(w, `"}`)
			return
		case NotJWT:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token":"opaque-token-that-is-not-a-jwt","token_type":"Bearer","expires_in":300}`)
			return
		}
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, info)))
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	info, _ := resp.Request.Context().Value(ctxKey{}).(reqInfo)
	if info.grant == "" {
		return nil
	}
	if info.onAnswer != nil {
		defer info.onAnswer(info.rtHash)
	}
	if resp.StatusCode == http.StatusOK {
		p.mu.Lock()
		p.grantsOK[info.grant]++
		if info.rtHash != "" {
			p.rtOK[info.rtHash]++
		}
		p.mu.Unlock()
	}
	if info.rtHash != "" && resp.StatusCode == http.StatusBadRequest {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body = io.NopCloser(bytes.NewReader(b))
		if bytes.Contains(b, []byte("invalid_grant")) {
			p.mu.Lock()
			p.rtInvalid++
			p.mu.Unlock()
		}
	}
	f := p.currentFault()
	if resp.StatusCode != http.StatusOK || (f != ExpiresMissing && f != ExpiresZero && f != ExpiresNeg && f != ExpiresHuge && f != ExpiresYears) {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	switch f {
	case ExpiresMissing:
		delete(m, "expires_in")
	case ExpiresZero:
		m["expires_in"] = 0
	case ExpiresNeg:
		m["expires_in"] = -5
	case ExpiresYears:
		m["expires_in"] = 10 * 365 * 24 * 3600
	case ExpiresHuge:
		m["expires_in"] = int64(1) << 40
	}
	if b, err = json.Marshal(m); err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return nil
}

// resetConn answers with a TCP RST.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(errors.New("proxy: cannot hijack"))
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
