package csi

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
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ikeycloak "github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
)

const realmName = "mlflow"

// federated is a Keycloak client bound to one ServiceAccount (federated client authentication).
type federated struct {
	ClientID, Namespace, ServiceAccount string
	Lifespan                            time.Duration
}

func (f federated) subject() string {
	return "system:serviceaccount:" + f.Namespace + ":" + f.ServiceAccount
}

// The suite's clients, one per ServiceAccount. Their tokens carry aud=mlflow and a groups claim
// (mlflow_users), as mlflow-oidc-auth wants them.
var (
	trainer = federated{"csi-trainer", "csi-train", "trainer", 20 * time.Second}
	alpha   = federated{"csi-alpha", "csi-a", "alpha", time.Minute}
	beta    = federated{"csi-beta", "csi-a", "beta", time.Minute}
	rotor   = federated{"csi-rotor", "csi-rot", "rotor", 6 * time.Second}
	reaper  = federated{"csi-reaper", "csi-rev", "reaper", 2 * time.Minute}
	bulk    = federated{"csi-bulk", "csi-bulk", "bulk", 5 * time.Minute}
	clients = []federated{trainer, alpha, beta, rotor, reaper, bulk}
)

// realmFile writes realm "mlflow" (test/e2e/realm-e2e.json: MLflow's client, its admin, the
// groups) with the Kubernetes identity provider of the node's API server and the federated
// clients, their service-account users in mlflow_users, and Keycloak's event store on (how the
// suite sees which ServiceAccount authenticated, and that a refused pod caused no request).
func realmFile(dir string) (string, error) {
	src := filepath.Join(repoRoot, "test", "e2e", "realm-e2e.json")
	data, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	var realm map[string]any
	if err := json.Unmarshal(data, &realm); err != nil {
		return "", err
	}
	realm["accessTokenLifespan"] = 60
	realm["eventsEnabled"] = true
	realm["eventsExpiration"] = 7200
	realm["enabledEventTypes"] = []string{"CLIENT_LOGIN", "CLIENT_LOGIN_ERROR"}
	realm["identityProviders"] = []any{map[string]any{
		"alias": "kubernetes", "providerId": "kubernetes", "enabled": true,
		"config": map[string]string{"issuer": saIssuer, "allowedClockSkew": "5"},
	}}
	var template map[string]any
	clientsJSON, _ := realm["clients"].([]any)
	for _, c := range clientsJSON {
		if c.(map[string]any)["clientId"] == "mlflow-operator" {
			template = c.(map[string]any)
		}
	}
	if template == nil {
		return "", fmt.Errorf("%s has no client mlflow-operator to copy the mappers from", src)
	}
	users, _ := realm["users"].([]any)
	for _, f := range clients {
		c := deepCopyJSON(template)
		delete(c, "secret")
		c["clientId"], c["name"], c["description"] = f.ClientID, f.ClientID, "bound to "+f.subject()
		c["clientAuthenticatorType"] = "federated-jwt"
		c["directAccessGrantsEnabled"] = false
		c["attributes"] = map[string]string{
			"access.token.lifespan": strconv.Itoa(int(f.Lifespan / time.Second)),
			"jwt.credential.issuer": "kubernetes",
			"jwt.credential.sub":    f.subject(),
		}
		for _, m := range c["protocolMappers"].([]any) {
			mm := m.(map[string]any)
			if mm["name"] == "audience-self" {
				mm["config"].(map[string]any)["included.client.audience"] = f.ClientID
			}
		}
		clientsJSON = append(clientsJSON, c)
		users = append(users, map[string]any{"username": "service-account-" + f.ClientID, "enabled": true,
			"serviceAccountClientId": f.ClientID, "realmRoles": []string{"default-roles-mlflow"}, "groups": []string{"/mlflow_users"}})
	}
	realm["clients"], realm["users"] = clientsJSON, users
	out, err := json.MarshalIndent(realm, "", " ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "mlflow-realm.json")
	return p, os.WriteFile(p, out, 0o644)
}

func deepCopyJSON(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// kcEvent is one entry of Keycloak's event store.
type kcEvent struct {
	Time     int64             `json:"time"`
	Type     string            `json:"type"`
	ClientID string            `json:"clientId"`
	Error    string            `json:"error"`
	Details  map[string]string `json:"details"`
}

// kcEvents lists the realm's stored events since a time.
func kcEvents(ctx context.Context, since time.Time) ([]kcEvent, error) {
	q := url.Values{"max": {"100000"}, "dateFrom": {since.Add(-24 * time.Hour).Format("2006-01-02")}}
	status, body, err := kc.Admin(ctx, http.MethodGet, "/admin/realms/"+realmName+"/events?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("events: HTTP %d: %s", status, body)
	}
	var all, out []kcEvent
	if err := json.Unmarshal(body, &all); err != nil {
		return nil, err
	}
	for _, e := range all {
		if !time.UnixMilli(e.Time).Before(since) {
			out = append(out, e)
		}
	}
	return out, nil
}

// saToken asks the API server for a token of f's ServiceAccount for the realm's audience (the
// test's own, to act as f's client: provisioning its MLflow user, introspecting its tokens).
func saToken(ctx context.Context, f federated) (string, error) {
	tr, err := cs.CoreV1().ServiceAccounts(f.Namespace).CreateToken(ctx, f.ServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{realmIssuer()}, ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

func realmIssuer() string { return kcURL + "/realms/" + realmName }

var kcClient = ikeycloak.NewGoCloak(ikeycloak.Options{})

// grant obtains a token as f's client with f's service-account token.
func grant(ctx context.Context, f federated) (string, error) {
	sa, err := saToken(ctx, f)
	if err != nil {
		return "", err
	}
	tok, err := kcClient.Token(ctx, ikeycloak.Endpoint{URL: kcURL, Realm: realmName}, ikeycloak.ClientAuth{ClientID: f.ClientID, Assertion: sa},
		ikeycloak.Grant{Type: ikeycloak.GrantClientCredentials})
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

// active asks Keycloak whether a token of f's client is active (introspection, authenticated as
// f's client with a service-account token).
func active(ctx context.Context, f federated, token string) (bool, error) {
	sa, err := saToken(ctx, f)
	if err != nil {
		return false, err
	}
	return kcClient.Introspect(ctx, ikeycloak.Endpoint{URL: kcURL, Realm: realmName}, ikeycloak.ClientAuth{ClientID: f.ClientID, Assertion: sa}, token, "access_token")
}

// passwordGrant logs MLflow's admin in (MLflow's own client).
func adminToken() (string, error) {
	form := url.Values{"grant_type": {"password"}, "client_id": {"mlflow"}, "client_secret": {"mlflowServerTestSecret0003"},
		"username": {"mlflow-admin"}, "password": {"mlflow-admin-password"}, "scope": {"openid email profile"}}
	resp, err := http.PostForm(realmIssuer()+"/protocol/openid-connect/token", form)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("admin login: HTTP %d: %s", resp.StatusCode, body)
	}
	return tok.AccessToken, nil
}

func urlHost(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if !strings.Contains(u.Host, ":") {
		return u.Host + ":443", nil
	}
	return u.Host, nil
}
