// Package keycloak obtains and revokes tokens at a Keycloak realm. It hides gocloak behind a
// small interface so that the controller can be tested, and it turns Keycloak's answers into
// errors a person can act on (see Error and its Reason).
package keycloak

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
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

// Credentials authenticate a confidential client.
type Credentials struct {
	ClientID     string
	ClientSecret string
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
	// ClientCredentials obtains a token for the client's service account.
	ClientCredentials(ctx context.Context, ep Endpoint, creds Credentials, scopes []string) (*Token, error)
	// Refresh redeems a refresh (or offline) token.
	Refresh(ctx context.Context, ep Endpoint, creds Credentials, refreshToken string, scopes []string) (*Token, error)
	// Password logs a user in (resource owner password credentials).
	Password(ctx context.Context, ep Endpoint, creds Credentials, user UserCredentials, scopes []string) (*Token, error)
	// Revoke revokes a token (RFC 7009). tokenTypeHint is "access_token" or "refresh_token".
	Revoke(ctx context.Context, ep Endpoint, creds Credentials, token, tokenTypeHint string) error
	// Introspect reports whether Keycloak considers a token active (RFC 7662), without using it.
	Introspect(ctx context.Context, ep Endpoint, creds Credentials, token, tokenTypeHint string) (bool, error)
	// DeleteSession ends a user session through the admin API, authenticated with adminToken.
	// It reports whether the session still existed (false: it was already gone).
	DeleteSession(ctx context.Context, ep Endpoint, adminToken, sessionID string, offline bool) (bool, error)
}

// UserCredentials are a user's name and password. Never log them.
type UserCredentials struct {
	Username string
	Password string
}

// Options configure the HTTP side of the client.
type Options struct {
	// Timeout bounds each HTTP request (gocloak has no timeout of its own).
	Timeout time.Duration
	// MaxResponseBytes caps how much of a response body is read.
	MaxResponseBytes int
	// TLSConfig, when set, is used for https (nil: system roots).
	TLSConfig *tls.Config
}

// DefaultOptions are used for zero fields of Options.
var DefaultOptions = Options{Timeout: 10 * time.Second, MaxResponseBytes: 1 << 20}

// GoCloak implements Client with gocloak. It keeps one gocloak client per base URL and CA
// bundle; those without a CA bundle share one resty client and so one pool of keep-alive
// connections, and each distinct CA bundle gets a resty client of its own.
type GoCloak struct {
	opts    Options
	resty   *resty.Client
	mu      sync.Mutex
	clients map[string]*gocloak.GoCloak
	byCA    map[string]*resty.Client
}

var _ Client = (*GoCloak)(nil)

// NewGoCloak returns a Client backed by gocloak.
func NewGoCloak(opts Options) *GoCloak {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultOptions.Timeout
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = DefaultOptions.MaxResponseBytes
	}
	return &GoCloak{opts: opts, resty: newResty(opts, opts.TLSConfig), clients: map[string]*gocloak.GoCloak{}, byCA: map[string]*resty.Client{}}
}

func newResty(opts Options, tlsConfig *tls.Config) *resty.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	transport.ResponseHeaderTimeout = opts.Timeout
	if tlsConfig != nil {
		transport.TLSClientConfig = tlsConfig
	}
	return resty.New().
		SetTransport(transport).
		SetTimeout(opts.Timeout).
		SetResponseBodyLimit(opts.MaxResponseBytes).
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
	c, ok := g.clients[key]
	if !ok {
		r := g.resty
		if caKey != "" {
			if r, ok = g.byCA[caKey]; !ok {
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(ep.CABundle)
				r = newResty(g.opts, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
				g.byCA[caKey] = r
			}
		}
		c = gocloak.NewClient(ep.URL)
		c.SetRestyClient(r)
		g.clients[key] = c
	}
	return c
}

func realmURL(ep Endpoint, path string) string {
	return strings.TrimRight(ep.URL, "/") + "/realms/" + url.PathEscape(ep.Realm) + path
}

// ClientCredentials implements Client.
func (g *GoCloak) ClientCredentials(ctx context.Context, ep Endpoint, creds Credentials, scopes []string) (*Token, error) {
	return g.token(ctx, ep, creds, map[string]string{"grant_type": "client_credentials"}, scopes)
}

// Refresh implements Client.
func (g *GoCloak) Refresh(ctx context.Context, ep Endpoint, creds Credentials, refreshToken string, scopes []string) (*Token, error) {
	return g.token(ctx, ep, creds, map[string]string{"grant_type": "refresh_token", "refresh_token": refreshToken}, scopes)
}

// Password implements Client.
func (g *GoCloak) Password(ctx context.Context, ep Endpoint, creds Credentials, user UserCredentials, scopes []string) (*Token, error) {
	return g.token(ctx, ep, creds, map[string]string{"grant_type": "password", "username": user.Username, "password": user.Password}, scopes)
}

// Introspect implements Client. gocloak's RetrospectToken sends an RPT hint and drops fields,
// so the request is built on gocloak's base request.
func (g *GoCloak) Introspect(ctx context.Context, ep Endpoint, creds Credentials, token, tokenTypeHint string) (bool, error) {
	form := map[string]string{"client_id": creds.ClientID, "client_secret": creds.ClientSecret, "token": token}
	if tokenTypeHint != "" {
		form["token_type_hint"] = tokenTypeHint
	}
	var res struct {
		Active bool `json:"active"`
	}
	resp, err := g.client(ep).GetRequest(ctx).SetFormData(form).SetResult(&res).
		Post(realmURL(ep, "/protocol/openid-connect/token/introspect"))
	if err := classify(ctx, resp, err, "introspection"); err != nil {
		return false, err
	}
	return res.Active, nil
}

// DeleteSession implements Client. gocloak's LogoutUserSession has no isOffline parameter, so
// the request is built on gocloak's authenticated request.
func (g *GoCloak) DeleteSession(ctx context.Context, ep Endpoint, adminToken, sessionID string, offline bool) (bool, error) {
	u := strings.TrimRight(ep.URL, "/") + "/admin/realms/" + url.PathEscape(ep.Realm) + "/sessions/" + url.PathEscape(sessionID)
	if offline {
		u += "?isOffline=true"
	}
	resp, err := g.client(ep).GetRequestWithBearerAuth(ctx, adminToken).Delete(u)
	if err == nil && resp != nil && resp.StatusCode() == http.StatusNotFound {
		return false, nil
	}
	if err := classify(ctx, resp, err, "session deletion"); err != nil {
		return false, err
	}
	return true, nil
}

// token posts a grant to the token endpoint. The client's credentials travel in the form body
// (client_secret_post), not in a Basic header: gocloak does not URL-encode Basic credentials,
// so secrets with '%', '+', '&' ... would fail with a misleading "invalid client credentials".
func (g *GoCloak) token(ctx context.Context, ep Endpoint, creds Credentials, form map[string]string, scopes []string) (*Token, error) {
	form["client_id"] = creds.ClientID
	form["client_secret"] = creds.ClientSecret
	if len(scopes) > 0 {
		form["scope"] = strings.Join(scopes, " ")
	}
	var jwt gocloak.JWT
	resp, err := g.client(ep).GetRequest(ctx).
		SetFormData(form).
		SetResult(&jwt).
		Post(realmURL(ep, "/protocol/openid-connect/token"))
	if err := classify(ctx, resp, err, "token request"); err != nil {
		return nil, err
	}
	return tokenFrom(&jwt)
}

// Revoke implements Client. Keycloak answers 200 also for unknown or already revoked tokens,
// so revoking twice is harmless.
func (g *GoCloak) Revoke(ctx context.Context, ep Endpoint, creds Credentials, token, tokenTypeHint string) error {
	form := map[string]string{
		"client_id":     creds.ClientID,
		"client_secret": creds.ClientSecret,
		"token":         token,
	}
	if tokenTypeHint != "" {
		form["token_type_hint"] = tokenTypeHint
	}
	resp, err := g.client(ep).GetRequest(ctx).
		SetFormData(form).
		Post(realmURL(ep, "/protocol/openid-connect/revoke"))
	return classify(ctx, resp, err, "revocation")
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

// Reason classifies a failure; the controller maps it onto a condition reason.
type Reason string

// Failure reasons.
const (
	ReasonInvalidClientCredentials Reason = "InvalidClientCredentials"
	ReasonUnauthorizedClient       Reason = "UnauthorizedClient"
	ReasonInvalidScope             Reason = "InvalidScope"
	ReasonRealmNotFound            Reason = "RealmNotFound"
	ReasonUnreachable              Reason = "KeycloakUnreachable"
	ReasonTimeout                  Reason = "KeycloakTimeout"
	ReasonTLS                      Reason = "KeycloakTLSError"
	ReasonServerError              Reason = "KeycloakError"
	ReasonInvalidResponse          Reason = "InvalidTokenResponse"
	// ReasonInvalidGrant: Keycloak rejected the grant itself (invalid_grant): a refresh token that
	// expired, was revoked or reused, or a wrong user name or password.
	ReasonInvalidGrant Reason = "InvalidGrant"
)

// Error is a classified Keycloak failure. Its message never contains credentials or tokens.
type Error struct {
	Reason Reason
	// StatusCode is the HTTP status, 0 for transport failures.
	StatusCode int
	Message    string
}

func (e *Error) Error() string { return e.Message }

// ReasonOf returns the Reason of a Keycloak error, or ReasonServerError for others.
func ReasonOf(err error) Reason {
	var ke *Error
	if errors.As(err, &ke) {
		return ke.Reason
	}
	return ReasonServerError
}

func classify(ctx context.Context, resp *resty.Response, err error, what string) error {
	if err != nil {
		switch {
		case errors.Is(err, resty.ErrResponseBodyTooLarge):
			return &Error{Reason: ReasonInvalidResponse, Message: what + ": Keycloak's response is larger than the size limit"}
		case resp != nil && resp.RawResponse != nil && resp.StatusCode() >= 200 && resp.StatusCode() < 300:
			// An answer arrived but could not be decoded (truncated or not JSON).
			return &Error{Reason: ReasonInvalidResponse, StatusCode: resp.StatusCode(),
				Message: fmt.Sprintf("%s: Keycloak's answer is not a valid token response (%s)", what, truncate(err.Error(), 120))}
		}
		return transportError(ctx, err, what)
	}
	if resp == nil {
		return &Error{Reason: ReasonServerError, Message: what + ": no response from Keycloak"}
	}
	code := resp.StatusCode()
	if code >= 200 && code < 300 {
		return nil
	}
	var oauthErr, desc string
	if e, ok := resp.Error().(*gocloak.HTTPErrorResponse); ok && e != nil {
		oauthErr = truncate(e.Error, 64)
		desc = truncate(firstNonEmpty(e.Description, e.Message), 200)
	}
	detail := resp.Status()
	if oauthErr != "" || desc != "" {
		detail = fmt.Sprintf("%d %s", code, strings.TrimSpace(oauthErr+": "+desc))
	}
	switch {
	case code == http.StatusNotFound:
		return &Error{Reason: ReasonRealmNotFound, StatusCode: code,
			Message: fmt.Sprintf("%s: Keycloak answered %s: the realm does not exist or the URL is not Keycloak's base URL", what, detail)}
	case oauthErr == "invalid_grant":
		return &Error{Reason: ReasonInvalidGrant, StatusCode: code,
			Message: fmt.Sprintf("%s: Keycloak rejected the grant (%s)", what, detail)}
	case oauthErr == "invalid_scope":
		return &Error{Reason: ReasonInvalidScope, StatusCode: code,
			Message: fmt.Sprintf("%s: Keycloak rejected the requested scopes (%s)", what, detail)}
	case oauthErr == "invalid_client" || (code == http.StatusUnauthorized && strings.Contains(strings.ToLower(desc), "invalid client")):
		return &Error{Reason: ReasonInvalidClientCredentials, StatusCode: code,
			Message: fmt.Sprintf("%s: Keycloak rejected the client ID or secret (%s)", what, detail)}
	case oauthErr == "unauthorized_client" || code == http.StatusUnauthorized || code == http.StatusForbidden:
		return &Error{Reason: ReasonUnauthorizedClient, StatusCode: code,
			Message: fmt.Sprintf("%s: the client may not use this grant (%s); for client credentials enable \"Service accounts roles\" on the client", what, detail)}
	case code >= 500:
		return &Error{Reason: ReasonServerError, StatusCode: code,
			Message: fmt.Sprintf("%s: Keycloak failed with %s", what, detail)}
	default:
		return &Error{Reason: ReasonServerError, StatusCode: code,
			Message: fmt.Sprintf("%s: unexpected answer from Keycloak: %s", what, detail)}
	}
}

func transportError(ctx context.Context, err error, what string) error {
	var netErr net.Error
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var verifyErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalidCert) || errors.As(err, &verifyErr):
		return &Error{Reason: ReasonTLS, Message: fmt.Sprintf("%s: Keycloak's TLS certificate could not be verified (%s); set keycloak.caBundle or keycloak.caConfigMapRef to the CA that issued it", what, describeTransport(err))}
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		return &Error{Reason: ReasonTimeout, Message: fmt.Sprintf("%s: Keycloak did not answer in time", what)}
	case ctx.Err() != nil:
		return &Error{Reason: ReasonTimeout, Message: fmt.Sprintf("%s: cancelled: %v", what, ctx.Err())}
	}
	return &Error{Reason: ReasonUnreachable, Message: fmt.Sprintf("%s: cannot reach Keycloak: %s", what, describeTransport(err))}
}

// describeTransport renders a transport error without the request's form data (Go's url.Error
// carries only method and URL, and our URLs hold no credentials).
func describeTransport(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return truncate(ue.Err.Error(), 300)
	}
	return truncate(err.Error(), 300)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
