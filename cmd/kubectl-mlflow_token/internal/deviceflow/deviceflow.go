// Package deviceflow runs the OAuth 2.0 Device Authorization Grant (RFC 8628) for the kubectl
// plugin's bootstrap, on golang.org/x/oauth2's Config.DeviceAuth and Config.DeviceAccessToken
// (the requests, the polling ticker, authorization_pending and slow_down). It adds only what the
// library leaves to its callers (golang.org/x/oauth2 v0.36.0, deviceauth.go):
//
//   - Client authentication at the device authorization endpoint. DeviceAuth sends client_id
//     and scope only; Keycloak answers a confidential client without its credentials with
//     invalid_client. The secret (or a client assertion) goes in as a form parameter.
//   - Credentials in the form body (client_secret_post) at the token endpoint as well
//     (AuthStyleInParams): Keycloak does not URL-decode the Basic header's parts, so secrets
//     with '%', '+' or '&' fail there (the operator does the same).
//   - Back-off after a failure to reach the server or a 5xx. DeviceAccessToken returns at the
//     first such error ("default: return tok, err"); RFC 8628 §3.5 asks the client to slow down
//     and go on, and a person halfway through a login should not have to start again.
//   - Checks of the answer before it reaches a terminal, an expiry that is required, and errors
//     that name the endpoint, status and OAuth code but never quote a response body.
//   - A Token whose String hides the secrets (oauth2.Token prints them under %v).
package deviceflow

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"golang.org/x/oauth2"
)

// Error codes of RFC 8628 §3.5 that callers act on.
const (
	// ErrorAccessDenied: the person denied the request.
	ErrorAccessDenied = "access_denied"
	// ErrorExpiredToken: the device code expired before the person logged in.
	ErrorExpiredToken = "expired_token"
)

const (
	// maxInterval bounds the polling interval the server asks for and the back-off after errors.
	maxInterval = 60 * time.Second
	// expirySlack: Keycloak counts a code's lifetime in whole seconds and forgets an expired code
	// (invalid_grant), which can happen a moment before the local deadline.
	expirySlack = 2 * time.Second
)

// Client talks to one client's device authorization and token endpoints.
type Client struct {
	// HTTP sends the requests. It should have a timeout; nil uses a client with 30 s.
	HTTP *http.Client
	// DeviceAuthorizationURL is the device authorization endpoint, for Keycloak
	// <base>/realms/<realm>/protocol/openid-connect/auth/device.
	DeviceAuthorizationURL string
	// TokenURL is the token endpoint, for Keycloak <base>/realms/<realm>/protocol/openid-connect/token.
	TokenURL string
	// ClientID identifies the client.
	ClientID string
	// ClientSecret authenticates a confidential client (empty for a public client).
	ClientSecret string
	// ClientAssertion authenticates a confidential client with a signed JWT instead of a secret
	// (a Kubernetes service-account token, for Keycloak's federated client authentication).
	ClientAssertion string
}

// Authorization is the server's answer to a device authorization request (RFC 8628 §3.2).
type Authorization struct {
	// DeviceCode identifies the request when polling. It is a credential: never print it.
	DeviceCode string
	// UserCode is what the person checks (or types) on the verification page.
	UserCode string
	// VerificationURI is the page where the person enters UserCode.
	VerificationURI string
	// VerificationURIComplete is VerificationURI with the user code in it (may be empty).
	VerificationURIComplete string
	// ExpiresAt is when the device code and the user code expire.
	ExpiresAt time.Time
	// Interval is the minimum time between two polls (whole seconds on the wire).
	Interval time.Duration
}

// String leaves out the device code.
func (a *Authorization) String() string {
	return fmt.Sprintf("{user code %s at %s, expires %s}", a.UserCode, a.VerificationURI, a.ExpiresAt.Format(time.RFC3339))
}

// Token is the token endpoint's answer. It holds secrets: never print it (String and GoString
// leave them out, so a %v in a log line cannot leak them).
type Token struct {
	AccessToken  string
	RefreshToken string
	TokenType    string
	Scope        string
	ExpiresIn    time.Duration
}

// String leaves out the tokens.
func (t *Token) String() string {
	return fmt.Sprintf("{token type %q, scope %q, expires in %s}", t.TokenType, t.Scope, t.ExpiresIn)
}

// GoString leaves out the tokens.
func (t *Token) GoString() string { return "deviceflow.Token" + t.String() }

// Error is an OAuth error response (RFC 6749 §5.2) or an unusable answer.
type Error struct {
	// Status is the HTTP status code (0 when no answer was received).
	Status int
	// Code is the OAuth error code, e.g. access_denied (empty when the body was not an OAuth error).
	Code string
	// Description is the server's error_description, or what was wrong with the answer.
	Description string
	// Endpoint is "device authorization" or "token".
	Endpoint string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s endpoint", e.Endpoint)
	if e.Status != 0 {
		fmt.Fprintf(&b, " answered HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, ": %s", e.Description)
	}
	return b.String()
}

// transient: no answer, or a server error without an OAuth code; worth trying again later.
func (e *Error) transient() bool { return e.Code == "" && (e.Status == 0 || e.Status >= 500) }

// CodeOf returns the OAuth error code of err, or "".
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Authorize starts a device authorization (RFC 8628 §3.1) for the given scopes.
func (c *Client) Authorize(ctx context.Context, scopes []string) (*Authorization, error) {
	const endpoint = "device authorization"
	opts := c.credentials()
	if c.ClientSecret != "" && c.ClientAssertion == "" {
		opts = append(opts, oauth2.SetAuthURLParam("client_secret", c.ClientSecret))
	}
	if len(scopes) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("scope", strings.Join(scopes, " ")))
	}
	start := time.Now()
	da, err := c.config().DeviceAuth(c.withHTTP(ctx), opts...)
	if err != nil {
		return nil, describe(endpoint, err)
	}
	bad := func(what string) error { return &Error{Status: http.StatusOK, Endpoint: endpoint, Description: what} }
	if da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "" {
		return nil, bad("the answer lacks device_code, user_code or verification_uri")
	}
	// The URI and the user code are printed to a terminal: refuse anything that could carry
	// escape sequences or point somewhere other than a web page.
	if !printable(da.UserCode) {
		return nil, bad("the user code holds non-printable characters")
	}
	if err := checkWebURL(da.VerificationURI); err != nil {
		return nil, bad("verification_uri: " + err.Error())
	}
	if da.VerificationURIComplete != "" {
		if err := checkWebURL(da.VerificationURIComplete); err != nil {
			return nil, bad("verification_uri_complete: " + err.Error())
		}
	}
	// Without an expiry DeviceAccessToken would poll until the context ends.
	if !da.Expiry.After(start) {
		return nil, bad("expires_in is missing or not a positive number of seconds")
	}
	interval := time.Duration(da.Interval) * time.Second
	if interval <= 0 {
		interval = 5 * time.Second // RFC 8628 §3.2
	}
	return &Authorization{
		DeviceCode: da.DeviceCode, UserCode: da.UserCode,
		VerificationURI: da.VerificationURI, VerificationURIComplete: da.VerificationURIComplete,
		ExpiresAt: da.Expiry, Interval: min(interval, maxInterval),
	}, nil
}

// Poll asks the token endpoint, every interval, whether the person has logged in (RFC 8628
// §3.4, §3.5). It returns the token, or an *Error with code access_denied when the person denied
// the request, expired_token when the code expired first, or another code the server answered.
// After a failure to reach the server or a 5xx it goes on polling at twice the interval.
func (c *Client) Poll(ctx context.Context, a *Authorization) (*Token, error) {
	da := &oauth2.DeviceAuthResponse{DeviceCode: a.DeviceCode, Expiry: a.ExpiresAt, Interval: int64(a.Interval / time.Second)}
	cfg, hctx := c.config(), c.withHTTP(ctx)
	expired := func(detail string) error {
		return &Error{Endpoint: "token", Code: ErrorExpiredToken, Description: "the code expired before the login was completed" + detail}
	}
	var failed *Error // the last transient failure, if the code expires while retrying
	for {
		// DeviceAccessToken polls until the token, a final answer or the code's expiry (its
		// context deadline); it restarts here only after a transient failure.
		tok, err := cfg.DeviceAccessToken(hctx, da, c.credentials()...)
		if err == nil {
			return tokenOf(tok), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !time.Now().Before(a.ExpiresAt) {
			if failed != nil {
				return nil, expired(" (the last poll failed: " + failed.Error() + ")")
			}
			return nil, expired("")
		}
		e := describe("token", err)
		switch {
		case e.Code == "invalid_grant" && time.Until(a.ExpiresAt) < expirySlack:
			return nil, expired(" (" + e.Description + ")")
		case e.transient():
			failed = e
			da.Interval = min(2*max(da.Interval, 1), int64(maxInterval/time.Second))
		default:
			return nil, e
		}
	}
}

func (c *Client) config() *oauth2.Config {
	cfg := &oauth2.Config{
		ClientID: c.ClientID,
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: c.DeviceAuthorizationURL,
			TokenURL:      c.TokenURL,
			AuthStyle:     oauth2.AuthStyleInParams,
		},
	}
	// With an assertion no secret is sent: AuthStyleInParams then adds client_id only.
	if c.ClientAssertion == "" {
		cfg.ClientSecret = c.ClientSecret
	}
	return cfg
}

// credentials are the form parameters of a client assertion (none for a client secret: the
// token endpoint gets that from AuthStyleInParams, the device endpoint from Authorize).
func (c *Client) credentials() []oauth2.AuthCodeOption {
	if c.ClientAssertion == "" {
		return nil
	}
	return []oauth2.AuthCodeOption{
		oauth2.SetAuthURLParam("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
		oauth2.SetAuthURLParam("client_assertion", c.ClientAssertion),
	}
}

// withHTTP hands the HTTP client to x/oauth2, which takes it from the context.
func (c *Client) withHTTP(ctx context.Context) context.Context {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return context.WithValue(ctx, oauth2.HTTPClient, hc)
}

// describe turns x/oauth2's errors into an *Error. It never quotes the response body
// (RetrieveError.Error does when there is no OAuth code).
func describe(endpoint string, err error) *Error {
	var re *oauth2.RetrieveError
	var ue *url.Error
	switch {
	case errors.As(err, &re):
		e := &Error{Endpoint: endpoint, Code: re.ErrorCode, Description: re.ErrorDescription}
		if re.Response != nil {
			e.Status = re.Response.StatusCode
		}
		if e.Code == "" && e.Status == http.StatusNotFound {
			e.Description = "not found (wrong URL or realm?)"
		}
		return e
	case errors.As(err, &ue):
		return &Error{Endpoint: endpoint, Description: transportError(ue.Err)}
	default:
		// An answer with a success status that is not what RFC 8628 or RFC 6749 describe
		// (x/oauth2's messages name the problem, not the content).
		return &Error{Endpoint: endpoint, Status: http.StatusOK, Description: "unusable answer: " + strings.TrimPrefix(err.Error(), "oauth2: ")}
	}
}

// transportError describes a failure to get an answer.
func transportError(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "no answer in time"
	default:
		return err.Error()
	}
}

func tokenOf(t *oauth2.Token) *Token {
	scope, _ := t.Extra("scope").(string)
	return &Token{
		AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, TokenType: t.TokenType, Scope: scope,
		ExpiresIn: time.Duration(t.ExpiresIn) * time.Second,
	}
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return s != ""
}

func checkWebURL(s string) error {
	if !printable(s) {
		return errors.New("holds non-printable characters")
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("not an http(s) URL")
	}
	return nil
}
