package tenancy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
)

// seen is one request as the proxy or the attacker's server saw it.
type seen struct {
	Path   string
	Grant  string // grant_type of a token request
	Tokens []string
}

// recorder keeps what reached a server. The tenancy tests' own requests (marked with the header
// X-Tenancy-Test) are forwarded but not recorded.
type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

func (r *recorder) record(req *http.Request) {
	if req.Header.Get("X-Tenancy-Test") != "" {
		return
	}
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	req.Body = io.NopCloser(bytes.NewReader(body))
	form, _ := url.ParseQuery(string(body))
	s := seen{Path: req.URL.Path, Grant: form.Get("grant_type")}
	for _, k := range []string{"token", "refresh_token", "client_assertion"} {
		if v := form.Get(k); v != "" {
			s.Tokens = append(s.Tokens, v)
		}
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, s)
	r.mu.Unlock()
}

// count returns how many requests were recorded.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// carrying counts the recorded requests that carried token (as a refresh token redeemed, a
// token revoked or introspected), and how many of them were grants (redemptions).
func (r *recorder) carrying(token string) (all, grants int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.reqs {
		for _, t := range s.Tokens {
			if t == token {
				all++
				if s.Grant != "" {
					grants++
				}
			}
		}
	}
	return all, grants
}

// countingProxy is Keycloak as the operator sees it: HTTPS (a test CA) in front of Keycloak's
// plain HTTP port, recording every request the operator sends, so that the tests count requests
// at the wire, not through the operator's own metrics.
type countingProxy struct {
	recorder
	URL string
	srv *http.Server
}

func startProxy(target string, cert tls.Certificate, caPEM []byte) (*countingProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{URL: "https://" + ln.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(u) // keeps the Host header: Keycloak's issuer is the proxy's URL
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	rp.Transport = tr
	p.srv = &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.record(r); rp.ServeHTTP(w, r) }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = p.srv.ServeTLS(ln, "", "") }()
	return p, nil
}

// attackerServer is a host of the tenant's choosing, outside the allow-list: any request that
// reaches it is a request the operator should never have sent. It answers like a revocation
// endpoint would (200), so that an operator that believed it would report success.
type attackerServer struct {
	recorder
	URL string // http://localhost:PORT: a host name not in --allowed-keycloak-hosts
	srv *http.Server
}

func startAttacker() (*attackerServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	a := &attackerServer{URL: "http://localhost:" + port}
	a.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.record(r)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"x","expires_in":300,"token_type":"Bearer"}`))
	})}
	go func() { _ = a.srv.Serve(ln) }()
	return a, nil
}
