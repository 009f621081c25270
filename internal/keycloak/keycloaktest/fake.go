// Package keycloaktest is an in-memory Keycloak behind keycloak.Client, for tests that drive the
// controller without servers (with a fake clock, in milliseconds). It keeps what the operator's
// behaviour depends on: tokens that are JWTs with iss/azp/exp/sid claims, confidential clients,
// users, sessions, refresh chains under strict rotation (redeeming a refresh token twice ends its
// session), revocation and introspection. Faults are injected per call with Fail.
//
// It is a test double for what the real server is not needed for; Keycloak's real behaviour is
// pinned down by the integration tests against a real Keycloak (test/integration).
package keycloaktest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
)

// Fake is an in-memory Keycloak. The zero value is not usable: use New.
type Fake struct {
	mu    sync.Mutex
	clock clock.PassiveClock

	// AccessLifetime and RefreshLifetime are the lifetimes of the tokens it issues.
	AccessLifetime, RefreshLifetime time.Duration
	// ClientRefreshTokens makes client-credentials grants open a session with a refresh token
	// (the client attribute client_credentials.use_refresh_token).
	ClientRefreshTokens bool
	// DiscoveredIssuer, when set, is the issuer discovery states (else the realm's URL), as a
	// Keycloak behind a proxy or with a hostname setting would.
	DiscoveredIssuer string
	// Fail, when set, is asked before every call; a non-nil error fails the call with it
	// (e.g. &keycloak.Error{Reason: keycloak.ReasonUnreachable, ...}).
	Fail func(op keycloak.Op) error

	clients map[string]string // client id → secret
	// federated: client id → the service-account subject ("system:serviceaccount:<ns>:<name>")
	// whose tokens authenticate it (Keycloak's "Signed JWT - Federated").
	federated map[string]string
	users     map[string]string // user → password
	refresh   map[string]*refreshToken
	revoked   map[string]bool // access token → revoked
	sessions  map[string]bool // session id → alive
	calls     map[string]int
	serial    int
	// sent records every call's base URL and the token it carried (a refresh token redeemed, a
	// token revoked or introspected), for tests of where tokens go.
	sent []Sent
}

// Sent is one call as the fake saw it.
type Sent struct {
	Kind  string // as in Calls
	URL   string // the endpoint's base URL
	Token string // the token the call carried ("" for grants without one)
}

type refreshToken struct {
	client, session string
	offline, active bool
	expires         time.Time
}

// New returns a Fake with one confidential client and the given clock; lifetimes default to 300 s
// (access) and 1800 s (refresh).
func New(clk clock.PassiveClock, clientID, secret string) *Fake {
	return &Fake{
		clock: clk, AccessLifetime: 300 * time.Second, RefreshLifetime: 1800 * time.Second,
		clients: map[string]string{clientID: secret}, users: map[string]string{}, federated: map[string]string{},
		refresh: map[string]*refreshToken{}, revoked: map[string]bool{}, sessions: map[string]bool{}, calls: map[string]int{},
	}
}

var _ keycloak.Client = (*Fake)(nil)

// AddFederatedClient adds a client that authenticates with tokens of one Kubernetes service
// account (subject system:serviceaccount:<namespace>:<name>). The fake reads the subject from the
// assertion's `sub` claim.
func (f *Fake) AddFederatedClient(clientID, subject string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.federated[clientID] = subject
}

// AddUser adds a user who can log in with the password grant.
func (f *Fake) AddUser(name, password string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[name] = password
}

// SetClientSecret changes (or adds) a client's secret, as an administrator rotating it would.
func (f *Fake) SetClientSecret(clientID, secret string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clients[clientID] = secret
}

// Bootstrap returns a refresh (or offline) token of a new session of user, as a person would get
// it by logging in (e.g. with the device flow), for the RefreshToken grant.
func (f *Fake) Bootstrap(clientID, user string, offline bool) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serial++
	sid := fmt.Sprintf("session-%d", f.serial)
	f.sessions[sid] = true
	return f.newRefresh(clientID, sid, user, offline)
}

// Calls returns how many calls of a kind were made: the grant for the token endpoint
// (client_credentials, refresh_token, password), else the endpoint (revoke, introspect, session).
func (f *Fake) Calls(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[kind]
}

// TotalCalls is the number of calls of every kind.
func (f *Fake) TotalCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += c
	}
	return n
}

// SessionAlive reports whether a session still lives.
func (f *Fake) SessionAlive(sid string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions[sid]
}

// Revoked reports whether an access token was revoked.
func (f *Fake) Revoked(accessToken string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.revoked[accessToken]
}

// RefreshActive reports whether a refresh token can still be redeemed.
func (f *Fake) RefreshActive(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	rt, ok := f.refresh[token]
	return ok && rt.active && f.sessions[rt.session] && f.clock.Now().Before(rt.expires)
}

// Requests returns every call made so far, in order.
func (f *Fake) Requests() []Sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Sent(nil), f.sent...)
}

// Carried counts the calls that carried token.
func (f *Fake) Carried(token string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.sent {
		if s.Token == token {
			n++
		}
	}
	return n
}

func (f *Fake) count(op keycloak.Op, ep keycloak.Endpoint, token string) error {
	kind := op.Endpoint
	if kind == "token" {
		kind = op.Grant
	}
	f.calls[kind]++
	f.sent = append(f.sent, Sent{Kind: kind, URL: ep.URL, Token: token})
	if f.Fail != nil {
		return f.Fail(op)
	}
	return nil
}

func (f *Fake) authenticate(auth keycloak.ClientAuth) error {
	if auth.Assertion != "" {
		sub, ok := f.federated[auth.ClientID]
		c, err := jwtclaims.Parse(auth.Assertion)
		if !ok || err != nil || c.Subject != sub {
			return &keycloak.Error{Reason: keycloak.ReasonInvalidClientCredentials, StatusCode: 401, Message: "token request: Keycloak rejected the client ID or secret (401 invalid_client: Invalid client or Invalid client credentials)"}
		}
		return nil
	}
	if s, ok := f.clients[auth.ClientID]; !ok || s != auth.Secret || s == "" {
		return &keycloak.Error{Reason: keycloak.ReasonInvalidClientCredentials, StatusCode: 401, Message: "token request: Keycloak rejected the client ID or secret (401 invalid_client: Invalid client or Invalid client credentials)"}
	}
	return nil
}

func invalidGrant(desc string) error {
	return &keycloak.Error{Reason: keycloak.ReasonInvalidGrant, StatusCode: 400, Message: "token request: Keycloak rejected the grant (400 invalid_grant: " + desc + ")"}
}

// Token implements keycloak.Client.
func (f *Fake) Token(_ context.Context, ep keycloak.Endpoint, auth keycloak.ClientAuth, g keycloak.Grant) (*keycloak.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.count(keycloak.Op{Grant: string(g.Type), Endpoint: "token", Realm: ep.Realm}, ep, g.RefreshToken); err != nil {
		return nil, err
	}
	if err := f.authenticate(auth); err != nil {
		return nil, err
	}
	offline := false
	for _, s := range g.Scopes {
		offline = offline || s == "offline_access"
	}
	switch g.Type {
	case keycloak.GrantClientCredentials:
		if !f.ClientRefreshTokens {
			return f.issue(ep, auth.ClientID, "", "service-account-"+auth.ClientID, false, false), nil
		}
		f.serial++
		sid := fmt.Sprintf("session-%d", f.serial)
		f.sessions[sid] = true
		return f.issue(ep, auth.ClientID, sid, "service-account-"+auth.ClientID, true, false), nil
	case keycloak.GrantPassword:
		if p, ok := f.users[g.Username]; !ok || p != g.Password {
			return nil, invalidGrant("Invalid user credentials")
		}
		f.serial++
		sid := fmt.Sprintf("session-%d", f.serial)
		f.sessions[sid] = true
		return f.issue(ep, auth.ClientID, sid, g.Username, true, offline), nil
	case keycloak.GrantRefreshToken:
		rt, ok := f.refresh[g.RefreshToken]
		switch {
		case !ok || rt.client != auth.ClientID:
			return nil, invalidGrant("Invalid refresh token")
		case !f.sessions[rt.session]:
			return nil, invalidGrant("Session not active")
		case !f.clock.Now().Before(rt.expires):
			return nil, invalidGrant("Token is not active")
		case !rt.active:
			// Strict rotation: a reused refresh token ends the session.
			f.sessions[rt.session] = false
			return nil, invalidGrant("Maximum allowed refresh token reuse exceeded")
		}
		rt.active = false
		return f.issue(ep, auth.ClientID, rt.session, "user-of-"+rt.session, true, rt.offline), nil
	}
	return nil, &keycloak.Error{Reason: keycloak.ReasonUnsupportedGrant, Message: "unsupported grant"}
}

// issue makes an access token (and a refresh token when refresh is true). Called with f.mu held.
func (f *Fake) issue(ep keycloak.Endpoint, clientID, sid, user string, refresh, offline bool) *keycloak.Token {
	f.serial++
	now := f.clock.Now()
	claims := map[string]any{
		"jti": fmt.Sprintf("at-%d", f.serial), "iss": ep.IssuerURL(), "sub": "id-" + user, "preferred_username": user,
		"azp": clientID, "iat": now.Unix(), "exp": now.Add(f.AccessLifetime).Unix(), "typ": "Bearer",
	}
	if sid != "" {
		claims["sid"] = sid
	}
	tok := &keycloak.Token{AccessToken: jwt(claims), ExpiresIn: f.AccessLifetime, SessionState: sid}
	if refresh {
		tok.RefreshToken = f.newRefresh(clientID, sid, user, offline)
		if !offline {
			tok.RefreshExpiresIn = f.RefreshLifetime
		}
	}
	return tok
}

// newRefresh makes a refresh token of a session. Called with f.mu held.
func (f *Fake) newRefresh(clientID, sid, user string, offline bool) string {
	f.serial++
	typ := "Refresh"
	if offline {
		typ = "Offline"
	}
	tok := jwt(map[string]any{"jti": fmt.Sprintf("rt-%d", f.serial), "typ": typ, "sid": sid, "azp": clientID, "sub": "id-" + user})
	exp := f.clock.Now().Add(f.RefreshLifetime)
	if offline {
		exp = f.clock.Now().Add(30 * 24 * time.Hour)
	}
	f.refresh[tok] = &refreshToken{client: clientID, session: sid, offline: offline, active: true, expires: exp}
	return tok
}

// Revoke implements keycloak.Client: a refresh token ends its session, an access token is
// marked revoked. Unknown tokens are accepted, as Keycloak does.
func (f *Fake) Revoke(_ context.Context, ep keycloak.Endpoint, auth keycloak.ClientAuth, token, hint string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.count(keycloak.Op{Grant: hint, Endpoint: "revoke", Realm: ep.Realm}, ep, token); err != nil {
		return err
	}
	if err := f.authenticate(auth); err != nil {
		return err
	}
	if rt, ok := f.refresh[token]; ok {
		rt.active = false
		f.sessions[rt.session] = false
		return nil
	}
	f.revoked[token] = true
	return nil
}

// Introspect implements keycloak.Client.
func (f *Fake) Introspect(_ context.Context, ep keycloak.Endpoint, auth keycloak.ClientAuth, token, hint string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.count(keycloak.Op{Grant: hint, Endpoint: "introspect", Realm: ep.Realm}, ep, token); err != nil {
		return false, err
	}
	if err := f.authenticate(auth); err != nil {
		return false, err
	}
	rt, ok := f.refresh[token]
	if !ok {
		return !f.revoked[token], nil
	}
	return rt.active && f.sessions[rt.session] && f.clock.Now().Before(rt.expires), nil
}

// DeleteSession implements keycloak.Client.
func (f *Fake) DeleteSession(_ context.Context, ep keycloak.Endpoint, _, sid string, _ bool) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.count(keycloak.Op{Grant: "admin", Endpoint: "session", Realm: ep.Realm}, ep, ""); err != nil {
		return false, err
	}
	alive := f.sessions[sid]
	f.sessions[sid] = false
	return alive, nil
}

// Discover implements keycloak.Client: the realm's issuer is its URL (as Keycloak's is).
func (f *Fake) Discover(_ context.Context, ep keycloak.Endpoint) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.count(keycloak.Op{Grant: "discovery", Endpoint: "discovery", Realm: ep.Realm}, ep, ""); err != nil {
		return "", err
	}
	if f.DiscoveredIssuer != "" {
		return f.DiscoveredIssuer, nil
	}
	return ep.IssuerURL(), nil
}

func jwt(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc(b) + ".c2lnbmF0dXJl"
}

// ServiceAccountJWT is a JWT-shaped stand-in for a Kubernetes service-account token of
// namespace/name (serial makes tokens distinct).
func ServiceAccountJWT(namespace, name string, serial int) string {
	return jwt(map[string]any{"sub": "system:serviceaccount:" + namespace + ":" + name, "jti": fmt.Sprintf("sa-%d", serial)})
}

// Unreachable is the error of a Keycloak that does not answer, for Fail.
func Unreachable(op keycloak.Op) error {
	return &keycloak.Error{Reason: keycloak.ReasonUnreachable, Message: op.Endpoint + ": cannot reach Keycloak: dial tcp 127.0.0.1:1: connect: connection refused"}
}
