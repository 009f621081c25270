package mlflowcheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
)

// The request. GET /api/2.0/mlflow/users/current is the cheapest read that needs an authenticated
// user, and it is served by both auth apps of MLflow servers: mlflow-oidc-auth (11.x: its FastAPI
// users router; every authentication failure under /api is a 401 {"detail": "Authentication
// required"}) and MLflow's own basic-auth app (3.x: GET_CURRENT_USER, allowed to every
// authenticated user). It reads one user row and writes nothing. (Like every bearer request, the
// first one may make mlflow-oidc-auth provision the user when OIDC_PROVISION_ON_BEARER_AUTH is on:
// the same thing the training job's first call would do.) It names the user MLflow sees, which
// the Accepted message reports.
//
// Not GET /api/2.0/mlflow/experiments/search?max_results=1, the obvious MLflow read: behind
// mlflow-oidc-auth its answer is filtered by permissions and topped up page by page until
// max_results readable experiments are found, so for a service account that may read none of N
// experiments it costs N one-row queries. It is used only when the server has no current-user
// endpoint (404: MLflow without an auth app, behind a proxy that authenticates), where it is a
// single query.
const (
	pathCurrentUser = "/api/2.0/mlflow/users/current"
	pathSearch      = "/api/2.0/mlflow/experiments/search?max_results=1"
)

// probe asks MLflow and classifies the answer.
func (c *Checker) probe(ctx context.Context, req Request) Result {
	base := strings.TrimRight(req.TrackingURI, "/")
	hc := c.client(req.CABundle)
	a := c.get(ctx, hc, base+pathCurrentUser, req.Token)
	if a.err == nil && a.status == http.StatusNotFound {
		// No current-user endpoint. Ask MLflow itself; this is a second request, so it waits
		// for its own turn.
		if err := c.limiter.Wait(ctx); err != nil {
			return Result{Outcome: Unreachable, Message: "Stopped before MLflow answered"}
		}
		if b := c.get(ctx, hc, base+pathSearch, req.Token); b.err != nil || b.status != http.StatusNotFound {
			return classify(req, b, false, c.clock.Now())
		}
		return Result{Outcome: Unexpected, Status: http.StatusNotFound, Message: fmt.Sprintf(
			"%s answered 404 to %s and to %s: is spec.mlflow.trackingURI the MLflow server's base URL (what MLFLOW_TRACKING_URI would be)?",
			where(req.TrackingURI), pathCurrentUser, "/api/2.0/mlflow/experiments/search")}
	}
	return classify(req, a, true, c.clock.Now())
}

type answer struct {
	status   int
	header   http.Header
	body     []byte
	err      error
	took     time.Duration
	endpoint string
}

// get sends one GET with the token, bounded by the per-request timeout. Redirects are not
// followed: a redirect usually leads to a login page that would answer 200 to anyone, and the
// token must go to the tracking URI's host only.
func (c *Checker) get(ctx context.Context, hc *http.Client, u, token string) answer {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	a := answer{endpoint: u}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		a.err = err
		return a
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "mlflow-token-operator (MLflow acceptance check)")
	start := time.Now()
	resp, err := hc.Do(req)
	a.took = time.Since(start)
	if err != nil {
		a.err = err
		return a
	}
	defer resp.Body.Close()
	a.status, a.header = resp.StatusCode, resp.Header
	a.body, _ = io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxResponseBytes))
	return a
}

// classify turns an answer into a result. currentUser: the answer is the current-user endpoint's
// (its body names the user).
func classify(req Request, a answer, currentUser bool, now time.Time) Result {
	uri := req.TrackingURI
	if a.err != nil {
		return Result{Outcome: Unreachable, Message: unreachable(uri, a.err)}
	}
	r := Result{Status: a.status}
	switch s := a.status; {
	case s >= 200 && s < 300:
		r.Outcome = Accepted
		if currentUser {
			r.User = userOf(a.body, req.Token)
		}
		switch {
		case r.User != "":
			r.Message = fmt.Sprintf("%s accepts the token as user %q", where(uri), r.User)
		case currentUser:
			r.Message = fmt.Sprintf("%s accepts the token", where(uri))
		default:
			r.Message = fmt.Sprintf("%s accepts the token (an experiment search succeeded; the server has no user endpoint, so it runs without an auth app or behind a proxy)", where(uri))
		}
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		r.Outcome = Rejected
		r.Message = explain(uri, s, a.header, claimsOf(req.Token), now)
	case s == http.StatusTooManyRequests || s >= 500:
		r.Outcome = Unreachable
		r.Message = fmt.Sprintf("%s answered %d %s%s; the next new token is checked again",
			where(uri), s, http.StatusText(s), detail(a.body, req.Token))
	case s >= 300 && s < 400:
		r.Outcome = Unexpected
		r.Message = fmt.Sprintf("%s answered %d redirecting to %s instead of answering: a proxy in front of MLflow may want a browser login, or spec.mlflow.trackingURI is not the server's base URL",
			where(uri), s, redirectTarget(a.header.Get("Location")))
	default:
		r.Outcome = Unexpected
		r.Message = fmt.Sprintf("%s answered %d %s%s to %s", where(uri), s, http.StatusText(s), detail(a.body, req.Token), pathOf(a.endpoint))
	}
	return r
}

// unreachable words a transport error. Errors of net/http name the URL, never a header: the
// token is not in them.
func unreachable(uri string, err error) string {
	var (
		ua  x509.UnknownAuthorityError
		hn  x509.HostnameError
		cie x509.CertificateInvalidError
		tv  *tls.CertificateVerificationError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return fmt.Sprintf("%s did not answer in time; the next new token is checked again", where(uri))
	case errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &cie) || errors.As(err, &tv):
		return fmt.Sprintf("The certificate of %s could not be verified (%v): the operator trusts the system's roots and spec.keycloak's CA bundle", where(uri), rootCause(err))
	default:
		return fmt.Sprintf("Could not reach %s: %v; the next new token is checked again", where(uri), rootCause(err))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// rootCause drops url.Error's "Get \"<url>\": " prefix (the message names the URL already).
func rootCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// userOf reads the user name from the current-user answer: mlflow-oidc-auth answers
// {"username": ...}, MLflow's basic-auth app {"user": {"username": ...}}. Anything that does not
// look like a user name (too long, or holding the token: a server that echoes the request) is
// dropped.
func userOf(body []byte, token string) string {
	var v struct {
		Username string `json:"username"`
		User     struct {
			Username string `json:"username"`
		} `json:"user"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	u := v.Username
	if u == "" {
		u = v.User.Username
	}
	if len(u) > 256 || (token != "" && strings.Contains(u, token)) {
		return ""
	}
	return u
}

// detail is ": <message>" from a JSON error body (MLflow's "message", FastAPI's "detail"), or "".
// The token is cut out, in case a server echoes the request.
func detail(body []byte, token string) string {
	var v struct {
		Message string `json:"message"`
		Detail  any    `json:"detail"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	m := v.Message
	if s, ok := v.Detail.(string); ok && m == "" {
		m = s
	}
	if m == "" {
		return ""
	}
	if token != "" {
		m = strings.ReplaceAll(m, token, "[token]")
	}
	return ": " + clip(m, 200)
}

// redirectTarget shows where a redirect leads, without its query (which may carry state).
func redirectTarget(loc string) string {
	u, err := url.Parse(loc)
	if err != nil || loc == "" {
		return "an unreadable location"
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return clip(u.String(), 200)
}

func pathOf(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Path
	}
	return u
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func claimsOf(token string) *jwtclaims.Claims {
	c, err := jwtclaims.Parse(token)
	if err != nil {
		return nil
	}
	return c
}

func expiryOf(token string) time.Time {
	if c := claimsOf(token); c != nil {
		return c.ExpiresAt
	}
	return time.Time{}
}

// newHTTPClient returns a client that trusts the system's roots plus ca, follows no redirects and
// keeps a few idle connections per host. Proxies come from the environment, as for Keycloak.
func newHTTPClient(ca []byte, timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 4
	tr.ResponseHeaderTimeout = timeout
	if len(ca) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pool.AppendCertsFromPEM(ca)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
