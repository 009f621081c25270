// Package deviceflow is a client of the OAuth 2.0 Device Authorization Grant (RFC 8628): it asks
// the authorization server for a device code and a user code, and then polls the token endpoint
// until the person has logged in with that user code in a browser, denied it, or let it expire.
//
// It is the kubectl plugin's way to seed a RefreshToken grant without a password ever being typed
// into a terminal. Only the standard library is used, so the plugin links no Keycloak client.
//
// Client credentials of a confidential client travel in the form body (client_secret_post), not
// in a Basic header: Keycloak does not URL-decode the Basic header's parts, so secrets with
// characters such as '%', '+' or '&' would fail there (the operator does the same).
package deviceflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// GrantType is the grant_type of the device access token request (RFC 8628 §3.4).
const GrantType = "urn:ietf:params:oauth:grant-type:device_code"

// Error codes of RFC 8628 §3.5 and RFC 6749 §5.2 that callers act on.
const (
	// ErrorAuthorizationPending: the person has not finished logging in yet; keep polling.
	ErrorAuthorizationPending = "authorization_pending"
	// ErrorSlowDown: polling too fast; keep polling, 5 seconds slower.
	ErrorSlowDown = "slow_down"
	// ErrorAccessDenied: the person denied the request.
	ErrorAccessDenied = "access_denied"
	// ErrorExpiredToken: the device code expired before the person logged in.
	ErrorExpiredToken = "expired_token"
)

const (
	// defaultInterval is the polling interval when the server names none (RFC 8628 §3.2).
	defaultInterval = 5 * time.Second
	// slowDownStep is added to the interval at each slow_down (RFC 8628 §3.5).
	slowDownStep = 5 * time.Second
	// maxInterval bounds the interval grown by slow_down and by the back-off after errors.
	maxInterval = 60 * time.Second
	// maxResponseBytes caps what is read from the server.
	maxResponseBytes = 1 << 20
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

	// Now and Sleep are the clock; nil means the real one. Sleep waits d or until ctx ends.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
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
	// Interval is the minimum time between two polls.
	Interval time.Duration
}

// String leaves out the device code.
func (a *Authorization) String() string {
	return fmt.Sprintf("{user code %s at %s, expires %s}", a.UserCode, a.VerificationURI, a.ExpiresAt.Format(time.RFC3339))
}

// Token is the token endpoint's answer. It holds secrets: never print it (String and GoString
// leave them out, so a %v in a log line cannot leak them).
type Token struct {
	AccessToken      string
	RefreshToken     string
	TokenType        string
	Scope            string
	ExpiresIn        time.Duration
	RefreshExpiresIn time.Duration
}

// String leaves out the tokens.
func (t *Token) String() string {
	return fmt.Sprintf("{token type %q, scope %q, expires in %s, refresh expires in %s}", t.TokenType, t.Scope, t.ExpiresIn, t.RefreshExpiresIn)
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
	form := c.form()
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	var res struct {
		DeviceCode              string      `json:"device_code"`
		UserCode                string      `json:"user_code"`
		VerificationURI         string      `json:"verification_uri"`
		VerificationURIComplete string      `json:"verification_uri_complete"`
		ExpiresIn               json.Number `json:"expires_in"`
		Interval                json.Number `json:"interval"`
	}
	start := c.now()
	if err := c.post(ctx, "device authorization", c.DeviceAuthorizationURL, form, &res); err != nil {
		return nil, err
	}
	bad := func(what string) error {
		return &Error{Status: http.StatusOK, Endpoint: "device authorization", Description: what}
	}
	if res.DeviceCode == "" || res.UserCode == "" || res.VerificationURI == "" {
		return nil, bad("the answer lacks device_code, user_code or verification_uri")
	}
	// The URI and the user code are printed to a terminal: refuse anything that could carry
	// escape sequences or point somewhere other than a web page.
	if !printable(res.UserCode) {
		return nil, bad("the user code holds non-printable characters")
	}
	if err := checkWebURL(res.VerificationURI); err != nil {
		return nil, bad("verification_uri: " + err.Error())
	}
	if res.VerificationURIComplete != "" {
		if err := checkWebURL(res.VerificationURIComplete); err != nil {
			return nil, bad("verification_uri_complete: " + err.Error())
		}
	}
	expiresIn, err := seconds(res.ExpiresIn)
	if err != nil || expiresIn <= 0 {
		return nil, bad("expires_in is missing or not a positive number of seconds")
	}
	interval, err := seconds(res.Interval)
	if err != nil || interval <= 0 {
		interval = defaultInterval
	}
	return &Authorization{
		DeviceCode: res.DeviceCode, UserCode: res.UserCode,
		VerificationURI: res.VerificationURI, VerificationURIComplete: res.VerificationURIComplete,
		ExpiresAt: start.Add(expiresIn), Interval: min(interval, maxInterval),
	}, nil
}

// Poll asks the token endpoint, every interval, whether the person has logged in (RFC 8628
// §3.4, §3.5). It returns the token, or an *Error with code access_denied when the person denied
// the request, expired_token when the code expired first, or another code the server answered.
// It waits longer after slow_down (5 s more each time) and after failures to reach the server
// (the interval doubles), as the RFC asks, and gives up when the code has expired.
func (c *Client) Poll(ctx context.Context, a *Authorization) (*Token, error) {
	interval := a.Interval
	if interval <= 0 {
		interval = defaultInterval
	}
	form := c.form()
	form.Set("grant_type", GrantType)
	form.Set("device_code", a.DeviceCode)
	expired := func(detail string) error {
		return &Error{Endpoint: "token", Code: ErrorExpiredToken, Description: "the code expired before the login was completed" + detail}
	}
	for {
		if !c.now().Before(a.ExpiresAt) {
			return nil, expired("")
		}
		if err := c.sleep(ctx, interval); err != nil {
			return nil, err
		}
		var res struct {
			AccessToken      string      `json:"access_token"`
			RefreshToken     string      `json:"refresh_token"`
			TokenType        string      `json:"token_type"`
			Scope            string      `json:"scope"`
			ExpiresIn        json.Number `json:"expires_in"`
			RefreshExpiresIn json.Number `json:"refresh_expires_in"`
		}
		err := c.post(ctx, "token", c.TokenURL, form, &res)
		if err == nil {
			if res.AccessToken == "" {
				return nil, &Error{Status: http.StatusOK, Endpoint: "token", Description: "the answer holds no access_token"}
			}
			t := &Token{AccessToken: res.AccessToken, RefreshToken: res.RefreshToken, TokenType: res.TokenType, Scope: res.Scope}
			t.ExpiresIn, _ = seconds(res.ExpiresIn)
			t.RefreshExpiresIn, _ = seconds(res.RefreshExpiresIn)
			return t, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var oe *Error
		switch {
		case !errors.As(err, &oe):
			return nil, err
		case oe.Code == ErrorAuthorizationPending:
		case oe.Code == ErrorSlowDown:
			interval = min(interval+slowDownStep, maxInterval)
		case oe.Code == "" && (oe.Status == 0 || oe.Status >= 500):
			// Unreachable, timed out or a server error: poll less often (RFC 8628 §3.5).
			interval = min(2*interval, maxInterval)
		case oe.Code == "invalid_grant" && !c.now().Before(a.ExpiresAt):
			// Keycloak forgets an expired device code and then calls it invalid.
			return nil, expired(" (" + oe.Description + ")")
		default:
			return nil, err
		}
	}
}

func (c *Client) form() url.Values {
	f := url.Values{}
	f.Set("client_id", c.ClientID)
	switch {
	case c.ClientAssertion != "":
		f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		f.Set("client_assertion", c.ClientAssertion)
	case c.ClientSecret != "":
		f.Set("client_secret", c.ClientSecret)
	}
	return f
}

// post sends a form and decodes a 200 JSON answer into out; anything else becomes an *Error.
func (c *Client) post(ctx context.Context, endpoint, u string, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return &Error{Endpoint: endpoint, Description: err.Error()}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return &Error{Endpoint: endpoint, Description: transportError(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return &Error{Endpoint: endpoint, Status: resp.StatusCode, Description: "reading the answer: " + err.Error()}
	}
	if len(body) > maxResponseBytes {
		return &Error{Endpoint: endpoint, Status: resp.StatusCode, Description: "the answer is larger than 1 MiB"}
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	isJSON := mt == "application/json" || strings.HasSuffix(mt, "+json")
	if resp.StatusCode != http.StatusOK {
		e := &Error{Endpoint: endpoint, Status: resp.StatusCode}
		var oauth struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if isJSON && json.Unmarshal(body, &oauth) == nil && oauth.Error != "" {
			e.Code, e.Description = oauth.Error, oauth.Description
		} else if resp.StatusCode == http.StatusNotFound {
			e.Description = "not found (wrong URL or realm?)"
		}
		return e
	}
	if !isJSON {
		return &Error{Endpoint: endpoint, Status: resp.StatusCode, Description: fmt.Sprintf("the answer is %q, not JSON", mt)}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return &Error{Endpoint: endpoint, Status: resp.StatusCode, Description: "the answer is not the expected JSON object"}
	}
	return nil
}

// transportError describes a failure to get an answer without quoting the request (its URL
// holds nothing secret, but the wrapped errors can be long).
func transportError(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "no answer in time"
	default:
		return err.Error()
	}
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if c.Sleep != nil {
		return c.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// seconds reads an OAuth "number of seconds" field ("" is zero).
func seconds(n json.Number) (time.Duration, error) {
	if n == "" {
		return 0, nil
	}
	f, err := n.Float64()
	if err != nil || f < 0 || f > 10*365*24*3600 {
		return 0, errors.New("not a plausible number of seconds")
	}
	return time.Duration(f * float64(time.Second)), nil
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
