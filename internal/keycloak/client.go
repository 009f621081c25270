// Package keycloak obtains, revokes and checks tokens at a Keycloak realm, behind the small
// Client interface, and turns Keycloak's answers into errors a person can act on (see Error and
// its Reason).
//
// What gocloak (github.com/Nerzal/gocloak/v13) is used for: its resty client, its base requests
// (GetRequest, GetRequestWithBearerAuth) and its decoding of token responses (gocloak.JWT) and of
// OAuth error bodies (gocloak.HTTPErrorResponse). Its higher-level calls are not used, and every
// request is built here, because each of them falls short in a way that matters to an operator:
//   - GetToken/LoginClient send the client credentials in a Basic header without URL-encoding them,
//     so secrets with '%', '+', '&' fail with a misleading "invalid client credentials"; here the
//     credentials go in the form body (client_secret_post), or a signed JWT goes there
//     (client_assertion, for a client that authenticates with a Kubernetes service-account token);
//   - LoginClient uses only the first scope string;
//   - RevokeToken has no token_type_hint, and RetrospectToken sends an RPT hint and drops the
//     fields of the answer;
//   - LogoutUserSession has no isOffline, so it cannot end an offline session.
//
// Rate limiting is an http.RoundTripper (Limits), so it applies to every request whatever its
// kind; metrics hook in through Options.Observe after each call, when its outcome is classified.
package keycloak

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Nerzal/gocloak/v13"
	"github.com/go-resty/resty/v2"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
)

// Endpoint names a realm of a Keycloak server.
type Endpoint struct {
	// URL is Keycloak's base URL, e.g. https://keycloak.example.com.
	URL string
	// Realm is the realm name.
	Realm string
	// CABundle is a PEM bundle of CAs to verify Keycloak's certificate with (nil: system roots).
	CABundle []byte
}

// IssuerURL is the realm's issuer: the `iss` of its tokens, and the audience a client assertion
// must carry.
func (ep Endpoint) IssuerURL() string {
	return strings.TrimRight(ep.URL, "/") + "/realms/" + url.PathEscape(ep.Realm)
}

// ClientAuth authenticates a confidential client: with its secret, or with a signed JWT (a
// Kubernetes service-account token, for a client whose authenticator is "Signed JWT -
// Federated"). It holds secrets: never log it.
type ClientAuth struct {
	ClientID string
	// Secret is the client secret (client_secret_post).
	Secret string
	// Assertion is a JWT sent as client_assertion (jwt-bearer) instead of a secret.
	Assertion string
}

// GrantType is an OAuth 2.0 grant of the token endpoint.
type GrantType string

// Grants.
const (
	GrantClientCredentials GrantType = "client_credentials"
	GrantRefreshToken      GrantType = "refresh_token"
	GrantPassword          GrantType = "password"
)

// Grant is what the token endpoint is asked for. It holds secrets: never log it.
type Grant struct {
	Type GrantType
	// RefreshToken is redeemed by GrantRefreshToken.
	RefreshToken string
	// Username and Password log a user in with GrantPassword.
	Username, Password string
	// Scopes are requested as one space-separated scope parameter.
	Scopes []string
}

// Token is what Keycloak's token endpoint returned. It holds secrets: never log it.
type Token struct {
	AccessToken      string
	RefreshToken     string
	ExpiresIn        time.Duration
	RefreshExpiresIn time.Duration
	Scope            string
	SessionState     string
}

// Client talks to Keycloak for the controller.
type Client interface {
	// Token asks the token endpoint for a token with the given grant.
	Token(ctx context.Context, ep Endpoint, auth ClientAuth, g Grant) (*Token, error)
	// Revoke revokes a token (RFC 7009). tokenTypeHint is "access_token" or "refresh_token".
	// Keycloak answers 200 also for unknown or already revoked tokens: revoking twice is harmless.
	Revoke(ctx context.Context, ep Endpoint, auth ClientAuth, token, tokenTypeHint string) error
	// Introspect reports whether Keycloak considers a token active (RFC 7662), without using it.
	Introspect(ctx context.Context, ep Endpoint, auth ClientAuth, token, tokenTypeHint string) (bool, error)
	// DeleteSession ends a user session through the admin API, authenticated with adminToken.
	// It reports whether the session still existed (false: it was already gone).
	DeleteSession(ctx context.Context, ep Endpoint, adminToken, sessionID string, offline bool) (bool, error)
	// Discover reads the realm's OIDC discovery document and returns the issuer it states.
	Discover(ctx context.Context, ep Endpoint) (issuer string, err error)
}

// Op names a call for metrics: the grant (or token type hint) and the endpoint, and the realm.
type Op struct {
	Grant    string
	Endpoint string
	Realm    string
}

// Options configure the HTTP side of the client.
type Options struct {
	// Timeout bounds each HTTP request (gocloak has no timeout of its own).
	Timeout time.Duration
	// MaxResponseBytes caps how much of a response body is read.
	MaxResponseBytes int
	// TLSConfig, when set, is used for https (nil: system roots).
	TLSConfig *tls.Config
	// Limits bound the request rate to Keycloak (zero: unlimited).
	Limits Limits
	// Observe, when set, is called after every call with its outcome (nil error: success).
	Observe func(op Op, took time.Duration, err error)
}

// DefaultOptions are used for zero fields of Options.
var DefaultOptions = Options{Timeout: 10 * time.Second, MaxResponseBytes: 1 << 20}

// GoCloak implements Client with gocloak. It keeps one gocloak client per base URL and CA
// bundle; those without a CA bundle share one resty client and so one pool of keep-alive
// connections, and each distinct CA bundle gets a resty client of its own. All of them share
// one rate limiter and one host guard. Clients unused for idleClientAfter are dropped (with
// their connections): URLs and CA bundles come from tenants and rotate, so their number has no
// bound of its own.
type GoCloak struct {
	opts      Options
	limiter   *limiter
	guard     *hostGuard
	resty     *resty.Client
	mu        sync.Mutex
	clients   map[string]*cached[*gocloak.GoCloak]
	byCA      map[string]*cached[*resty.Client]
	lastSweep time.Time
}

type cached[T any] struct {
	v        T
	lastUsed time.Time
}

// idleClientAfter: a client not used for this long is dropped.
const idleClientAfter = 30 * time.Minute

var _ Client = (*GoCloak)(nil)

// NewGoCloak returns a Client backed by gocloak.
func NewGoCloak(opts Options) *GoCloak {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultOptions.Timeout
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = DefaultOptions.MaxResponseBytes
	}
	g := &GoCloak{opts: opts, limiter: newLimiter(opts.Limits), guard: newHostGuard(opts.Limits.PerHostInFlight),
		clients: map[string]*cached[*gocloak.GoCloak]{}, byCA: map[string]*cached[*resty.Client]{}, lastSweep: time.Now()}
	g.resty = g.newResty(opts.TLSConfig)
	return g
}

func (g *GoCloak) newResty(tlsConfig *tls.Config) *resty.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	transport.ResponseHeaderTimeout = g.opts.Timeout
	if tlsConfig != nil {
		transport.TLSClientConfig = tlsConfig
	}
	return resty.New().
		SetTransport(g.guard.wrap(g.limiter.wrap(transport))).
		SetTimeout(g.opts.Timeout).
		SetResponseBodyLimit(g.opts.MaxResponseBytes).
		SetRedirectPolicy(resty.NoRedirectPolicy())
}

// client returns the gocloak client for an endpoint's base URL and CA bundle.
func (g *GoCloak) client(ep Endpoint) *gocloak.GoCloak {
	g.mu.Lock()
	defer g.mu.Unlock()
	caKey := ""
	if len(ep.CABundle) > 0 {
		sum := sha256.Sum256(ep.CABundle)
		caKey = hex.EncodeToString(sum[:])
	}
	key := ep.URL + "\x00" + caKey
	now := time.Now()
	g.sweep(now)
	r := g.resty
	if caKey != "" {
		rc, ok := g.byCA[caKey]
		if !ok {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ep.CABundle)
			rc = &cached[*resty.Client]{v: g.newResty(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})}
			g.byCA[caKey] = rc
		}
		rc.lastUsed, r = now, rc.v
	}
	c, ok := g.clients[key]
	if !ok {
		c = &cached[*gocloak.GoCloak]{v: gocloak.NewClient(ep.URL)}
		c.v.SetRestyClient(r)
		g.clients[key] = c
	}
	c.lastUsed = now
	return c.v
}

// sweep drops the clients not used for idleClientAfter (at most once a minute). Called with g.mu
// held.
func (g *GoCloak) sweep(now time.Time) {
	if now.Sub(g.lastSweep) < time.Minute {
		return
	}
	g.lastSweep = now
	for k, c := range g.clients {
		if now.Sub(c.lastUsed) > idleClientAfter {
			delete(g.clients, k)
		}
	}
	for k, rc := range g.byCA {
		if now.Sub(rc.lastUsed) > idleClientAfter {
			rc.v.GetClient().CloseIdleConnections()
			delete(g.byCA, k)
		}
	}
}

func (g *GoCloak) observe(op Op, start time.Time, err error) {
	if g.opts.Observe != nil {
		g.opts.Observe(op, time.Since(start), err)
	}
}

// authForm puts the client's authentication into a form: the secret (client_secret_post, not a
// Basic header: see the package doc) or the signed JWT (client_assertion).
func authForm(auth ClientAuth, form map[string]string) map[string]string {
	form["client_id"] = auth.ClientID
	switch {
	case auth.Assertion != "":
		form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
		form["client_assertion"] = auth.Assertion
	case auth.Secret != "":
		form["client_secret"] = auth.Secret
	}
	return form
}

// Token implements Client.
func (g *GoCloak) Token(ctx context.Context, ep Endpoint, auth ClientAuth, gr Grant) (tok *Token, err error) {
	defer func(start time.Time) {
		g.observe(Op{Grant: string(gr.Type), Endpoint: "token", Realm: ep.Realm}, start, err)
	}(time.Now())
	form := map[string]string{"grant_type": string(gr.Type)}
	switch gr.Type {
	case GrantClientCredentials:
	case GrantRefreshToken:
		form["refresh_token"] = gr.RefreshToken
	case GrantPassword:
		form["username"], form["password"] = gr.Username, gr.Password
	default:
		return nil, &Error{Reason: ReasonUnsupportedGrant, Message: fmt.Sprintf("grant type %q is not supported", gr.Type)}
	}
	if len(gr.Scopes) > 0 {
		form["scope"] = strings.Join(gr.Scopes, " ")
	}
	var jwt gocloak.JWT
	resp, herr := g.client(ep).GetRequest(ctx).
		SetFormData(authForm(auth, form)).
		SetResult(&jwt).
		Post(ep.IssuerURL() + "/protocol/openid-connect/token")
	if err = classify(ctx, resp, herr, "token request"); err != nil {
		return nil, err
	}
	tok, err = tokenFrom(&jwt)
	return tok, err
}

// Revoke implements Client.
func (g *GoCloak) Revoke(ctx context.Context, ep Endpoint, auth ClientAuth, token, tokenTypeHint string) (err error) {
	defer func(start time.Time) {
		g.observe(Op{Grant: tokenTypeHint, Endpoint: "revoke", Realm: ep.Realm}, start, err)
	}(time.Now())
	form := map[string]string{"token": token}
	if tokenTypeHint != "" {
		form["token_type_hint"] = tokenTypeHint
	}
	resp, herr := g.client(ep).GetRequest(ctx).
		SetFormData(authForm(auth, form)).
		Post(ep.IssuerURL() + "/protocol/openid-connect/revoke")
	err = classify(ctx, resp, herr, "revocation")
	return err
}

// Introspect implements Client.
func (g *GoCloak) Introspect(ctx context.Context, ep Endpoint, auth ClientAuth, token, tokenTypeHint string) (active bool, err error) {
	defer func(start time.Time) {
		g.observe(Op{Grant: tokenTypeHint, Endpoint: "introspect", Realm: ep.Realm}, start, err)
	}(time.Now())
	form := map[string]string{"token": token}
	if tokenTypeHint != "" {
		form["token_type_hint"] = tokenTypeHint
	}
	var res struct {
		Active bool `json:"active"`
	}
	resp, herr := g.client(ep).GetRequest(ctx).SetFormData(authForm(auth, form)).SetResult(&res).
		Post(ep.IssuerURL() + "/protocol/openid-connect/token/introspect")
	if err = classify(ctx, resp, herr, "introspection"); err != nil {
		return false, err
	}
	return res.Active, nil
}

// DeleteSession implements Client.
func (g *GoCloak) DeleteSession(ctx context.Context, ep Endpoint, adminToken, sessionID string, offline bool) (existed bool, err error) {
	defer func(start time.Time) { g.observe(Op{Grant: "admin", Endpoint: "session", Realm: ep.Realm}, start, err) }(time.Now())
	u := strings.TrimRight(ep.URL, "/") + "/admin/realms/" + url.PathEscape(ep.Realm) + "/sessions/" + url.PathEscape(sessionID)
	if offline {
		u += "?isOffline=true"
	}
	resp, herr := g.client(ep).GetRequestWithBearerAuth(ctx, adminToken).Delete(u)
	if herr == nil && resp != nil && resp.StatusCode() == http.StatusNotFound {
		return false, nil
	}
	if err = classify(ctx, resp, herr, "session deletion"); err != nil {
		return false, err
	}
	return true, nil
}

// Discover implements Client.
func (g *GoCloak) Discover(ctx context.Context, ep Endpoint) (issuer string, err error) {
	defer func(start time.Time) {
		g.observe(Op{Grant: "discovery", Endpoint: "discovery", Realm: ep.Realm}, start, err)
	}(time.Now())
	var doc struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	resp, herr := g.client(ep).GetRequest(ctx).SetResult(&doc).Get(ep.IssuerURL() + "/.well-known/openid-configuration")
	if err = classify(ctx, resp, herr, "realm discovery"); err != nil {
		return "", err
	}
	if doc.Issuer == "" || doc.TokenEndpoint == "" {
		err = &Error{Reason: ReasonInvalidResponse, Message: "realm discovery: the answer is not an OpenID Connect discovery document (no issuer or token_endpoint)"}
		return "", err
	}
	return doc.Issuer, nil
}

// maxExpiresIn bounds what we believe of expires_in: a token claiming to live longer than a
// year is treated as a broken response rather than scheduled a year ahead.
const maxExpiresIn = 366 * 24 * time.Hour

func tokenFrom(j *gocloak.JWT) (*Token, error) {
	if j.AccessToken == "" {
		return nil, &Error{Reason: ReasonInvalidResponse, Message: "Keycloak's token response holds no access_token"}
	}
	if !strings.EqualFold(j.TokenType, "bearer") && j.TokenType != "" {
		return nil, &Error{Reason: ReasonInvalidResponse, Message: fmt.Sprintf("Keycloak returned a token of type %q, expected Bearer", truncate(j.TokenType, 32))}
	}
	// Compare in seconds before converting: a huge expires_in would overflow time.Duration.
	maxSeconds := int64(maxExpiresIn / time.Second)
	if j.ExpiresIn <= 0 || int64(j.ExpiresIn) > maxSeconds {
		return nil, &Error{Reason: ReasonInvalidResponse, Message: fmt.Sprintf("Keycloak's token response has an unusable expires_in of %d seconds", j.ExpiresIn)}
	}
	exp := time.Duration(j.ExpiresIn) * time.Second
	var refreshExp time.Duration
	if j.RefreshExpiresIn > 0 && int64(j.RefreshExpiresIn) <= maxSeconds {
		refreshExp = time.Duration(j.RefreshExpiresIn) * time.Second
	}
	// mlflow-oidc-auth validates bearer tokens locally as JWTs: an opaque token would only ever
	// get a 401 from MLflow, so it is refused here with a clear reason instead of published.
	if _, err := jwtclaims.Parse(j.AccessToken); err != nil {
		return nil, &Error{Reason: ReasonInvalidResponse, Message: "Keycloak's access token is not usable by MLflow: " + err.Error()}
	}
	return &Token{
		AccessToken:      j.AccessToken,
		RefreshToken:     j.RefreshToken,
		ExpiresIn:        exp,
		RefreshExpiresIn: refreshExp,
		Scope:            j.Scope,
		SessionState:     j.SessionState,
	}, nil
}
