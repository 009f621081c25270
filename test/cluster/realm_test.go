package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
)

// Realm "mlflow" is test/e2e/realm-e2e.json: the operator's client (client credentials; its
// service account is in group mlflow_users, its tokens carry aud=mlflow and a groups claim, as
// mlflow-oidc-auth wants them), MLflow's own client and an MLflow admin.
const (
	realmMLflow        = "mlflow"
	ccClientID         = "mlflow-operator"
	ccClientSecret     = "mlflowOperatorTestSecret0001"
	saUsername         = "service-account-mlflow-operator" // its mlflow-oidc-auth username
	audience           = "mlflow"
	usersGroup         = "mlflow_users"
	adminsGroup        = "mlflow_admins"
	serverClientID     = "mlflow"
	serverClientSecret = "mlflowServerTestSecret0003"
	adminUser          = "mlflow-admin"
	adminPassword      = "mlflow-admin-password"
)

// Realm "strict" is test/keycloak/realm-strict.json: strict refresh-token rotation
// (revokeRefreshToken, reuse 0: redeeming a refresh token twice ends the session), users
// irene, ivan, ... with passwords <name>-password.
const (
	realmStrict        = "strict"
	strictClientID     = "mlflow-operator"
	strictClientSecret = "mlflowOperatorTestSecret0001"
	// strictTokenLifespan: long enough that a token renewed 40 s before its expiry outlives a
	// crash failover (the lease duration, 15 s, plus retries) with room to spare, as production's
	// 5-minute tokens do.
	strictTokenLifespan = 60 * time.Second
)

// realmFiles writes the realm fixtures with this suite's token lifetimes (their files say 25 s
// and 12 s, for envtest suites that only need rotations) and with Keycloak's event store on for
// the strict realm (how the failover test counts refresh errors).
func realmFiles(dir string) ([]string, error) {
	var out []string
	for _, r := range []struct {
		src      string
		lifespan time.Duration
		events   bool
	}{
		{filepath.Join(repoRoot, "test", "e2e", "realm-e2e.json"), jobTokens.Lifespan, false},
		{filepath.Join(repoRoot, "test", "keycloak", "realm-strict.json"), strictTokenLifespan, true},
	} {
		data, err := os.ReadFile(r.src)
		if err != nil {
			return nil, err
		}
		var realm map[string]any
		if err := json.Unmarshal(data, &realm); err != nil {
			return nil, fmt.Errorf("%s: %w", r.src, err)
		}
		secs := int(r.lifespan / time.Second)
		realm["accessTokenLifespan"] = secs
		clients, _ := realm["clients"].([]any)
		for _, c := range clients {
			c := c.(map[string]any)
			attrs, _ := c["attributes"].(map[string]any)
			if attrs == nil {
				attrs = map[string]any{}
				c["attributes"] = attrs
			}
			attrs["access.token.lifespan"] = strconv.Itoa(secs)
		}
		if r.events {
			realm["eventsEnabled"] = true
			realm["eventsExpiration"] = 3600
			// Keycloak stores refreshes, their errors and introspections only when asked by
			// name (they are not among the types it saves by default).
			realm["enabledEventTypes"] = []string{"LOGIN", "LOGIN_ERROR", "REFRESH_TOKEN", "REFRESH_TOKEN_ERROR",
				"INTROSPECT_TOKEN", "INTROSPECT_TOKEN_ERROR", "CLIENT_LOGIN", "CLIENT_LOGIN_ERROR", "LOGOUT"}
		}
		data, err = json.MarshalIndent(realm, "", " ")
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, filepath.Base(r.src))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// tokenResponse is what Keycloak's token endpoint answers.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	SessionState string `json:"session_state"`
}

// passwordGrant logs a user in at realm's token endpoint (through HTTPS, as the operator does).
func passwordGrant(realm, clientID, clientSecret, user, password, scope string) (tokenResponse, error) {
	form := url.Values{
		"grant_type": {"password"}, "client_id": {clientID}, "client_secret": {clientSecret},
		"username": {user}, "password": {password}, "scope": {scope},
	}
	resp, err := http.PostForm(kcURL+"/realms/"+realm+"/protocol/openid-connect/token", form)
	if err != nil {
		return tokenResponse{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var tok tokenResponse
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" {
		return tokenResponse{}, fmt.Errorf("password grant for %s in realm %s: HTTP %d: %s", user, realm, resp.StatusCode, body)
	}
	return tok, nil
}

// kcEvent is one entry of Keycloak's event store.
type kcEvent struct {
	Time      int64             `json:"time"`
	Type      string            `json:"type"`
	ClientID  string            `json:"clientId"`
	UserID    string            `json:"userId"`
	SessionID string            `json:"sessionId"`
	Error     string            `json:"error"`
	Details   map[string]string `json:"details"`
}

// kcEvents lists a realm's stored events of the given types since a time (admin API).
func kcEvents(ctx context.Context, realm string, since time.Time, types ...string) ([]kcEvent, error) {
	tok, err := kc.AdminToken(ctx)
	if err != nil {
		return nil, err
	}
	q := url.Values{"max": {"10000"}, "dateFrom": {since.Add(-24 * time.Hour).Format("2006-01-02")}}
	for _, t := range types {
		q.Add("type", t)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, kc.URL()+"/admin/realms/"+realm+"/events?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("events of realm %s: HTTP %d: %s", realm, resp.StatusCode, body)
	}
	var all []kcEvent
	if err := json.Unmarshal(body, &all); err != nil {
		return nil, err
	}
	var out []kcEvent
	for _, e := range all {
		if !time.UnixMilli(e.Time).Before(since) {
			out = append(out, e)
		}
	}
	return out, nil
}

// introspect asks Keycloak whether a token is active, through the URL it was issued through
// (Keycloak checks the issuer), authenticating as the client that obtained it.
func introspect(realm, clientID, clientSecret, token, hint string) (bool, error) {
	return keycloak.Introspect(kcURL, realm, clientID, clientSecret, token, hint)
}
