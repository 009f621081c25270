package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/mlflowserver"
)

// startMLflow starts the real MLflow server on loopback for the test realm.
func startMLflow(ctx context.Context, kcURL string) (*mlflowserver.Server, error) {
	return mlflowserver.Start(ctx, mlflowserver.Options{
		Venv: venv, Issuer: kcURL + "/realms/" + realm, Audience: audience,
		ClientID: serverClientID, ClientSecret: serverClientSecret, UsersGroup: usersGroup, AdminsGroup: adminsGroup,
	})
}

// adminToken gets a token for the realm's human admin (group mlflow_admins) by password grant
// at the MLflow server's own client.
func adminToken(t *testing.T) string {
	t.Helper()
	return realmToken(t, kcServer.URL(), "admin password grant", url.Values{
		"grant_type": {"password"}, "client_id": {serverClientID}, "client_secret": {serverClientSecret},
		"username": {adminUser}, "password": {adminPassword}, "scope": {"openid email profile"},
	})
}

// realmToken posts form to the realm's token endpoint at base and returns the access token.
func realmToken(t *testing.T, base, what string, form url.Values) string {
	t.Helper()
	resp, err := http.PostForm(base+"/realms/"+realm+"/protocol/openid-connect/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := readAllLimit(resp.Body)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("%s: HTTP %d: %s", what, resp.StatusCode, b)
	}
	return tok.AccessToken
}
