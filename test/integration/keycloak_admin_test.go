package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// tokenResponse is a token endpoint answer, for bootstrapping tokens as a person would with curl.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	SessionState string `json:"session_state"`
}

// passwordGrant logs a user in directly, like the seed guide's curl.
func passwordGrant(t *testing.T, realmName, client, secret, user, pass string, offline bool) tokenResponse {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "client_id": {client}, "client_secret": {secret},
		"username": {user}, "password": {pass}}
	if offline {
		form.Set("scope", "openid offline_access")
	}
	resp, err := http.PostForm(kcServer.URL()+"/realms/"+realmName+"/protocol/openid-connect/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&tr) != nil || tr.RefreshToken == "" {
		t.Fatalf("password grant for %s: %s", user, resp.Status)
	}
	return tr
}

// admin calls Keycloak's admin REST API as the master realm's bootstrap admin.
func admin(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	tok, err := kcServer.AdminToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, kcServer.URL()+"/admin/realms/"+path, rd)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func adminJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, body := admin(t, http.MethodGet, path, nil)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatal(err)
	}
}

func userID(t *testing.T, realmName, username string) string {
	t.Helper()
	var users []struct{ ID string }
	adminJSON(t, realmName+"/users?exact=true&username="+url.QueryEscape(username), &users)
	if len(users) != 1 {
		t.Fatalf("user %s: %d matches", username, len(users))
	}
	return users[0].ID
}

func clientUUID(t *testing.T, realmName, client string) string {
	t.Helper()
	var cs []struct{ ID string }
	adminJSON(t, realmName+"/clients?clientId="+url.QueryEscape(client), &cs)
	if len(cs) != 1 {
		t.Fatalf("client %s: %d matches", client, len(cs))
	}
	return cs[0].ID
}

// sessionIDs lists session ids from an admin sessions endpoint.
func sessionIDs(t *testing.T, path string) []string {
	t.Helper()
	var ss []struct{ ID string }
	adminJSON(t, path, &ss)
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return ids
}
