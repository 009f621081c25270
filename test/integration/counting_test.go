package integration

import (
	"context"
	"sync"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
)

// countingKeycloak counts the operator's calls to Keycloak per realm and kind, to report the
// number of Keycloak calls per rotation.
type countingKeycloak struct {
	keycloak.Client
	mu sync.Mutex
	n  map[string]int
}

func (c *countingKeycloak) inc(realmName, kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[realmName+"/"+kind]++
}

func (c *countingKeycloak) count(realmName, kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[realmName+"/"+kind]
}

func (c *countingKeycloak) ClientCredentials(ctx context.Context, ep keycloak.Endpoint, cr keycloak.Credentials, s []string) (*keycloak.Token, error) {
	c.inc(ep.Realm, "client_credentials")
	return c.Client.ClientCredentials(ctx, ep, cr, s)
}

func (c *countingKeycloak) Refresh(ctx context.Context, ep keycloak.Endpoint, cr keycloak.Credentials, rt string, s []string) (*keycloak.Token, error) {
	c.inc(ep.Realm, "refresh")
	return c.Client.Refresh(ctx, ep, cr, rt, s)
}

func (c *countingKeycloak) Password(ctx context.Context, ep keycloak.Endpoint, cr keycloak.Credentials, u keycloak.UserCredentials, s []string) (*keycloak.Token, error) {
	c.inc(ep.Realm, "password")
	return c.Client.Password(ctx, ep, cr, u, s)
}

func (c *countingKeycloak) Revoke(ctx context.Context, ep keycloak.Endpoint, cr keycloak.Credentials, tok, hint string) error {
	c.inc(ep.Realm, "revoke")
	return c.Client.Revoke(ctx, ep, cr, tok, hint)
}

func (c *countingKeycloak) Introspect(ctx context.Context, ep keycloak.Endpoint, cr keycloak.Credentials, tok, hint string) (bool, error) {
	c.inc(ep.Realm, "introspect")
	return c.Client.Introspect(ctx, ep, cr, tok, hint)
}

func (c *countingKeycloak) DeleteSession(ctx context.Context, ep keycloak.Endpoint, admin, sid string, offline bool) (bool, error) {
	c.inc(ep.Realm, "delete_session")
	return c.Client.DeleteSession(ctx, ep, admin, sid, offline)
}

// kcCalls counts every Keycloak call the in-process operator makes.
var kcCalls = &countingKeycloak{Client: keycloak.NewGoCloak(keycloak.Options{}), n: map[string]int{}}
