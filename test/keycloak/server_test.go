package keycloak

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	realm            = "mlflow"
	opClient         = "mlflow-operator"
	opSecret         = "mlflowOperatorTestSecret0001"
	refreshClient    = "mlflow-operator-refresh"
	refreshSecret    = "mlflowOperatorRefreshTestSecret0002"
	aliceUser        = "alice"
	alicePassword    = "alice-password"
	fixtureRealmFile = "realm-mlflow.json"
)

var httpClient = &http.Client{Timeout: 30 * time.Second}

func TestServerWithMlflowRealm(t *testing.T) {
	home := HomeFromEnv()
	if home == "" {
		t.Fatalf("%s is not set: run `hack/keycloak.sh install` and export the KEYCLOAK_HOME it prints", EnvHome)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	t0 := time.Now()
	srv, err := Start(ctx, Options{Home: home, RealmFiles: []string{fixtureRealmFile}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first start (fresh data, realm import): %s (optimized=%v) url=%s mgmt=%s", time.Since(t0).Round(100*time.Millisecond), srv.optimized, srv.URL(), srv.ManagementURL())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- end of %s ---\n%s", srv.LogPath(), tailFile(srv.LogPath(), 60))
		}
		srv.Close()
	})
	if !strings.HasPrefix(srv.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL() = %s, want http://127.0.0.1:PORT", srv.URL())
	}
	t.Logf("RSS after start: %s", rss(srv.ProcessGroup()))
	base := srv.URL() + "/realms/" + realm + "/protocol/openid-connect"

	// Client-credentials grant: 12 s lifespan, azp, audience.
	tok := grant(ctx, t, base, opClient, opSecret, url.Values{"grant_type": {"client_credentials"}})
	// expires_in is exp minus the current time and may already read 11.
	if got := num(tok["expires_in"]); got < 11 || got > 12 {
		t.Errorf("expires_in = %v, want 12 (or 11)", tok["expires_in"])
	}
	if rt, _ := tok["refresh_token"].(string); rt != "" {
		t.Errorf("%s got a refresh token; want none without client_credentials.use_refresh_token", opClient)
	}
	at := tok["access_token"].(string)
	claims := jwtClaims(t, at)
	if life := num(claims["exp"]) - num(claims["iat"]); life != 12 {
		t.Errorf("exp-iat = %v, want 12", life)
	}
	if claims["azp"] != opClient {
		t.Errorf("azp = %v, want %s", claims["azp"], opClient)
	}
	if !hasAudience(claims["aud"], "mlflow") {
		t.Errorf("aud = %v, want it to contain mlflow", claims["aud"])
	}
	if claims["iss"] != srv.URL()+"/realms/"+realm {
		t.Errorf("iss = %v, want %s", claims["iss"], srv.URL()+"/realms/"+realm)
	}
	t.Logf("client-credentials token: expires_in=%v aud=%v sub=%v sid=%v typ=%v scope=%v", tok["expires_in"], claims["aud"], claims["sub"], claims["sid"], claims["typ"], claims["scope"])

	// Introspection: active, then inactive after revocation.
	if in := introspect(ctx, t, base, at); in["active"] != true {
		t.Fatalf("introspection before revoke: %v, want active=true", in)
	} else if in["client_id"] != opClient {
		t.Errorf("introspection client_id = %v, want %s", in["client_id"], opClient)
	}
	revoke(ctx, t, base, opClient, opSecret, at)
	if in := introspect(ctx, t, base, at); in["active"] != false {
		t.Fatalf("introspection after revoke: %v, want active=false", in)
	}
	// Introspection by a client that is not in the token's aud says inactive (Keycloak 26.7).
	other := grant(ctx, t, base, opClient, opSecret, url.Values{"grant_type": {"client_credentials"}})["access_token"].(string)
	if in := introspectAs(ctx, t, base, refreshClient, refreshSecret, other); in["active"] != false {
		t.Errorf("introspection by a client outside aud: %v, want active=false", in)
	}
	// Revoking again answers 200 as well (idempotent).
	revoke(ctx, t, base, opClient, opSecret, at)

	// The service account's realm-management roles work on the admin API.
	sa := grant(ctx, t, base, opClient, opSecret, url.Values{"grant_type": {"client_credentials"}})
	var users []map[string]any
	adminGet(ctx, t, sa["access_token"].(string), srv.URL()+"/admin/realms/"+realm+"/users?exact=true&username="+aliceUser, &users)
	if len(users) != 1 || users[0]["username"] != aliceUser {
		t.Errorf("admin users query as service account: %v", users)
	}

	// Password grant for alice carries the groups claim.
	pw := grant(ctx, t, base, opClient, opSecret, url.Values{
		"grant_type": {"password"}, "username": {aliceUser}, "password": {alicePassword}, "scope": {"openid"},
	})
	ac := jwtClaims(t, pw["access_token"].(string))
	if !containsString(ac["groups"], "mlflow_users") {
		t.Errorf("alice groups claim = %v, want [mlflow_users]", ac["groups"])
	}
	if ac["preferred_username"] != aliceUser {
		t.Errorf("alice preferred_username = %v", ac["preferred_username"])
	}
	t.Logf("alice token: groups=%v aud=%v sid=%v refresh_expires_in=%v", ac["groups"], ac["aud"], ac["sid"], pw["refresh_expires_in"])

	// Client-credentials with use_refresh_token returns a refresh token (and a real session).
	rtok := grant(ctx, t, base, refreshClient, refreshSecret, url.Values{"grant_type": {"client_credentials"}})
	if rt, _ := rtok["refresh_token"].(string); rt == "" {
		t.Errorf("%s: no refresh_token in %v", refreshClient, rtok)
	}
	rc := jwtClaims(t, rtok["access_token"].(string))
	t.Logf("%s: expires_in=%v refresh_expires_in=%v session_state=%v sid=%v", refreshClient, rtok["expires_in"], rtok["refresh_expires_in"], rtok["session_state"], rc["sid"])

	// Admin token for the bootstrap admin.
	admin, err := srv.AdminToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Lengthen mlflow-operator's token lifespan so tokens outlive the restart, then check that a
	// revoked token stays revoked and an unrevoked one stays active across Stop/Restart.
	setClientAttr(ctx, t, srv, admin, opClient, "access.token.lifespan", "600")
	setClientAttr(ctx, t, srv, admin, refreshClient, "access.token.lifespan", "600")
	long := grant(ctx, t, base, opClient, opSecret, url.Values{"grant_type": {"client_credentials"}})
	if got := num(long["expires_in"]); got < 599 || got > 600 {
		t.Fatalf("after admin update expires_in = %v, want 600", long["expires_in"])
	}
	revokedAT := long["access_token"].(string)
	revoke(ctx, t, base, opClient, opSecret, revokedAT)
	keptAT := grant(ctx, t, base, opClient, opSecret, url.Values{"grant_type": {"client_credentials"}})["access_token"].(string)
	refreshAT := grant(ctx, t, base, refreshClient, refreshSecret, url.Values{"grant_type": {"client_credentials"}})
	if in := introspect(ctx, t, base, revokedAT); in["active"] != false {
		t.Fatalf("revoked token active before restart: %v", in)
	}

	pgid := srv.ProcessGroup()
	t1 := time.Now()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop: %s", time.Since(t1).Round(100*time.Millisecond))
	if srv.Running() {
		t.Fatal("Running() after Stop")
	}
	if leftovers := groupMembers(pgid); len(leftovers) > 0 {
		t.Fatalf("processes left in group %d after Stop: %v", pgid, leftovers)
	}

	t2 := time.Now()
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart (same data, same ports): %s", time.Since(t2).Round(100*time.Millisecond))
	t.Logf("RSS after restart: %s", rss(srv.ProcessGroup()))

	again := grant(ctx, t, base, opClient, opSecret, url.Values{"grant_type": {"client_credentials"}})
	if got := num(again["expires_in"]); got < 599 || got > 600 {
		t.Errorf("after restart expires_in = %v, want 600 (admin change kept)", again["expires_in"])
	}
	inRevoked := introspect(ctx, t, base, revokedAT)
	inKept := introspect(ctx, t, base, keptAT)
	t.Logf("after restart: introspection of token revoked before restart: active=%v; unrevoked token: active=%v", inRevoked["active"], inKept["active"])
	if inRevoked["active"] != false {
		t.Errorf("revoked access token is active again after restart: %v", inRevoked)
	}
	if inKept["active"] != true {
		t.Errorf("unrevoked, unexpired access token inactive after restart: %v", inKept)
	}
	inRefresh := introspectAs(ctx, t, base, refreshClient, refreshSecret, refreshAT["access_token"].(string))
	t.Logf("after restart: %s access token (persistent session) active=%v", refreshClient, inRefresh["active"])
	if inRefresh["active"] != true {
		t.Errorf("%s access token (unexpired, session-backed) inactive after restart: %v", refreshClient, inRefresh)
	}
	rr := grant(ctx, t, base, refreshClient, refreshSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshAT["refresh_token"].(string)}})
	t.Logf("after restart: refresh grant with pre-restart refresh token: ok, expires_in=%v", rr["expires_in"])

	admin, err = srv.AdminToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	setClientAttr(ctx, t, srv, admin, opClient, "access.token.lifespan", "12")
	setClientAttr(ctx, t, srv, admin, refreshClient, "access.token.lifespan", "12")
	if got := num(grant(ctx, t, base, opClient, opSecret, url.Values{"grant_type": {"client_credentials"}})["expires_in"]); got < 11 || got > 12 {
		t.Errorf("after restoring lifespan expires_in = %v, want 12", got)
	}
}

func grant(ctx context.Context, t *testing.T, base, clientID, secret string, form url.Values) map[string]any {
	t.Helper()
	status, body := post(ctx, t, base+"/token", clientID, secret, form)
	if status != http.StatusOK {
		t.Fatalf("%s grant for %s: HTTP %d: %s", form.Get("grant_type"), clientID, status, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("token response: %v: %s", err, body)
	}
	if at, _ := m["access_token"].(string); at == "" {
		t.Fatalf("no access_token: %s", body)
	}
	return m
}

// introspect authenticates as mlflow-operator; see introspectAs.
func introspect(ctx context.Context, t *testing.T, base, token string) map[string]any {
	t.Helper()
	return introspectAs(ctx, t, base, opClient, opSecret, token)
}

// introspectAs calls the introspection endpoint as clientID. Keycloak 26.7 answers active=false
// unless clientID is in the token's aud.
func introspectAs(ctx context.Context, t *testing.T, base, clientID, secret, token string) map[string]any {
	t.Helper()
	status, body := post(ctx, t, base+"/token/introspect", clientID, secret, url.Values{"token": {token}})
	if status != http.StatusOK {
		t.Fatalf("introspect: HTTP %d: %s", status, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("introspect: %v: %s", err, body)
	}
	return m
}

func revoke(ctx context.Context, t *testing.T, base, clientID, secret, token string) {
	t.Helper()
	status, body := post(ctx, t, base+"/revoke", clientID, secret, url.Values{"token": {token}, "token_type_hint": {"access_token"}})
	if status != http.StatusOK {
		t.Fatalf("revoke: HTTP %d: %s", status, body)
	}
}

func post(ctx context.Context, t *testing.T, u, clientID, secret string, form url.Values) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749 §2.3.1: form-urlencode client id and secret before Basic encoding.
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func adminGet(ctx context.Context, t *testing.T, bearer, u string, out any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d: %s", u, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v: %s", u, err, body)
	}
}

func setClientAttr(ctx context.Context, t *testing.T, srv *Server, admin, clientID, key, value string) {
	t.Helper()
	clientsURL := srv.URL() + "/admin/realms/" + realm + "/clients"
	var clients []map[string]any
	adminGet(ctx, t, admin, clientsURL+"?clientId="+url.QueryEscape(clientID), &clients)
	if len(clients) != 1 {
		t.Fatalf("client %s: found %d", clientID, len(clients))
	}
	c := clients[0]
	attrs, _ := c["attributes"].(map[string]any)
	if attrs == nil {
		attrs = map[string]any{}
	}
	attrs[key] = value
	c["attributes"] = attrs
	b, _ := json.Marshal(c)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, clientsURL+"/"+c["id"].(string), bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT client %s: HTTP %d: %s", clientID, resp.StatusCode, body)
	}
}

func jwtClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	return m
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func hasAudience(aud any, want string) bool {
	if s, ok := aud.(string); ok {
		return s == want
	}
	return containsString(aud, want)
}

func containsString(v any, want string) bool {
	list, _ := v.([]any)
	for _, x := range list {
		if x == want {
			return true
		}
	}
	return false
}

// groupMembers lists the pids whose process group is pgid.
func groupMembers(pgid int) []int {
	if pgid <= 0 {
		return nil
	}
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid pgrp ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// rss sums VmRSS over the process group.
func rss(pgid int) string {
	var total int64
	var parts []string
	for _, pid := range groupMembers(pgid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		var name string
		var kb int64
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Name:"); ok {
				name = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
		}
		total += kb
		parts = append(parts, fmt.Sprintf("%s=%dMiB", name, kb/1024))
	}
	return fmt.Sprintf("%d MiB total (%s)", total/1024, strings.Join(parts, ", "))
}
