// Package realms is the one definition of the Keycloak realms the tests import: the shape of a
// client the operator uses (a confidential client with a service account, the audience mappers
// mlflow-oidc-auth and introspection need, the groups claim), of a person and of a service-account
// user is written once here, and each realm lists its clients and users with what differs.
//
// The realm files (test/keycloak/realm-*.json, test/e2e/realm-e2e.json,
// test/uninstall/realm-uninstall.json, test/bench/realm-bench.json) are generated from it:
//
//	go -C test run ./keycloak/realms/gen
//
// and TestFixturesAreGenerated fails when a file differs from what this package generates.
package realms

import (
	"encoding/json"
	"strconv"
)

// obj is a JSON object of Keycloak's realm representation.
type obj = map[string]any

// Realm is one realm file: where it lives (relative to the repository root) and its content.
type Realm struct {
	Path string
	rep  obj
}

// JSON is the file's content: the representation, two-space indented, with a final newline.
func (r Realm) JSON() []byte {
	b, err := json.MarshalIndent(r.rep, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// Client is a client of a realm, built from the common shape by options.
type Client struct{ rep obj }

// Confidential is the client shape the operator uses: confidential (client secret), service
// accounts on, the password grant on (the Password grant tests), no browser flows.
func Confidential(id, secret string) *Client {
	return &Client{obj{
		"clientId": id, "enabled": true, "protocol": "openid-connect",
		"publicClient": false, "bearerOnly": false, "consentRequired": false,
		"clientAuthenticatorType": "client-secret", "secret": secret,
		"standardFlowEnabled": false, "implicitFlowEnabled": false,
		"directAccessGrantsEnabled": true, "serviceAccountsEnabled": true,
	}}
}

// Federated is a client that authenticates with a Kubernetes service-account token of subject
// (Keycloak's "Signed JWT - Federated", identity provider "kubernetes"), without any secret.
func Federated(id, subject string) *Client {
	c := Confidential(id, "")
	delete(c.rep, "secret")
	c.rep["clientAuthenticatorType"] = "federated-jwt"
	return c.Attr("jwt.credential.issuer", "kubernetes").Attr("jwt.credential.sub", subject)
}

// Named sets the client's display name and description (empty: none).
func (c *Client) Named(name, description string) *Client {
	if name != "" {
		c.rep["name"] = name
	}
	if description != "" {
		c.rep["description"] = description
	}
	return c
}

// Lifespan sets the client's access token lifespan in seconds.
func (c *Client) Lifespan(seconds int) *Client {
	return c.Attr("access.token.lifespan", strconv.Itoa(seconds))
}

// Attr sets a client attribute.
func (c *Client) Attr(k, v string) *Client {
	a, _ := c.rep["attributes"].(obj)
	if a == nil {
		a = obj{}
		c.rep["attributes"] = a
	}
	a[k] = v
	return c
}

// Set sets a field of the client's representation.
func (c *Client) Set(k string, v any) *Client {
	c.rep[k] = v
	return c
}

// DeviceLogin turns the client into the device-login client of `kubectl mlflow-token bootstrap`:
// the device grant with a 1-s polling interval, consent required, no service account, no password
// grant.
func (c *Client) DeviceLogin() *Client {
	return c.Set("directAccessGrantsEnabled", false).Set("serviceAccountsEnabled", false).Set("consentRequired", true).
		Attr("oauth2.device.authorization.grant.enabled", "true").Attr("oauth2.device.polling.interval", "1")
}

func (c *Client) mapper(m obj) *Client {
	ms, _ := c.rep["protocolMappers"].([]any)
	c.rep["protocolMappers"] = append(ms, m)
	return c
}

func audienceMapper(name string, cfg obj) obj {
	cfg["access.token.claim"], cfg["id.token.claim"], cfg["introspection.token.claim"], cfg["lightweight.claim"] = "true", "false", "true", "false"
	return obj{"name": name, "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper", "consentRequired": false, "config": cfg}
}

// AudienceSelf puts the client itself into its tokens' audience: Keycloak 26.7's introspection
// only accepts tokens whose aud contains the introspecting client.
func (c *Client) AudienceSelf() *Client {
	return c.mapper(audienceMapper("audience-self", obj{"included.client.audience": c.rep["clientId"]}))
}

// AudienceMLflow puts "mlflow" into the tokens' audience: the audience MLflow pins
// (OIDC_AUDIENCE).
func (c *Client) AudienceMLflow() *Client {
	return c.mapper(audienceMapper("audience-mlflow", obj{"included.custom.audience": "mlflow"}))
}

// Groups adds the groups claim (group names, not paths), which mlflow-oidc-auth reads, to access
// tokens, ID tokens, userinfo and introspection.
func (c *Client) Groups() *Client { return c.groups(true) }

// GroupsInAccessTokens adds the groups claim to access tokens (and introspection) only.
func (c *Client) GroupsInAccessTokens() *Client { return c.groups(false) }

func (c *Client) groups(everywhere bool) *Client {
	b := strconv.FormatBool(everywhere)
	return c.mapper(obj{"name": "groups", "protocol": "openid-connect", "protocolMapper": "oidc-group-membership-mapper", "consentRequired": false,
		"config": obj{"claim.name": "groups", "full.path": "false", "access.token.claim": "true", "id.token.claim": b,
			"userinfo.token.claim": b, "introspection.token.claim": "true", "lightweight.claim": "false"}})
}

// ForMLflow is the mappers every client whose tokens MLflow accepts carries: itself and mlflow in
// the audience, and the groups claim.
func (c *Client) ForMLflow() *Client { return c.AudienceSelf().AudienceMLflow().Groups() }

// User is a user of a realm.
type User struct{ rep obj }

// Person is a user with a password (`<username>-password`, unless changed), an e-mail at
// example.com and the realm's default roles.
func Person(username, first, last string) *User {
	return &User{obj{
		"username": username, "enabled": true, "email": username + "@example.com", "emailVerified": true,
		"firstName": first, "lastName": last,
		"credentials": []any{obj{"type": "password", "value": username + "-password", "temporary": false}},
	}}
}

// ServiceAccount is the service-account user of a client with service accounts.
func ServiceAccount(clientID string) *User {
	return &User{obj{"username": "service-account-" + clientID, "enabled": true, "serviceAccountClientId": clientID}}
}

// Password changes the person's password.
func (u *User) Password(p string) *User {
	u.rep["credentials"] = []any{obj{"type": "password", "value": p, "temporary": false}}
	return u
}

// InGroups puts the user into groups (names of the realm's top-level groups).
func (u *User) InGroups(groups ...string) *User {
	var paths []any
	for _, g := range groups {
		paths = append(paths, "/"+g)
	}
	u.rep["groups"] = paths
	return u
}

// AdminAPI gives a service account the realm-management roles of the operator's admin-API session
// check (view and manage users) and of the tests' look-ups (clients).
func (u *User) AdminAPI() *User {
	u.rep["clientRoles"] = obj{"realm-management": []any{"view-users", "query-users", "manage-users", "view-clients", "query-clients"}}
	return u
}

// NoDefaultRoles leaves out the realm's default roles.
func (u *User) NoDefaultRoles() *User {
	u.rep["noDefaultRoles"] = true
	return u
}

// realm builds a realm: the common settings (enabled, plain HTTP allowed on this machine), the
// access token lifespan, groups, clients and users (each user with the realm's default roles
// unless told otherwise).
func realm(path, name string, lifespan int, groups []string, clients []*Client, users []*User, extra obj) Realm {
	rep := obj{"realm": name, "enabled": true, "sslRequired": "none", "accessTokenLifespan": lifespan}
	if len(groups) > 0 {
		var gs []any
		for _, g := range groups {
			gs = append(gs, obj{"name": g, "path": "/" + g})
		}
		rep["groups"] = gs
	}
	var cs, us []any
	for _, c := range clients {
		cs = append(cs, c.rep)
	}
	for _, u := range users {
		if u.rep["noDefaultRoles"] == true {
			delete(u.rep, "noDefaultRoles")
		} else {
			u.rep["realmRoles"] = []any{"default-roles-" + name}
		}
		us = append(us, u.rep)
	}
	rep["clients"], rep["users"] = cs, us
	for k, v := range extra {
		rep[k] = v
	}
	return Realm{Path: path, rep: rep}
}
