package integration

import (
	"sync"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
)

// callCounter counts the operator's calls to Keycloak per realm and kind (the grant for the
// token endpoint: client_credentials, refresh_token, password; else the endpoint: revoke,
// introspect, session), to report and check the number of Keycloak calls per rotation.
type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *callCounter) observe(op keycloak.Op, _ time.Duration, _ error) {
	kind := op.Endpoint
	if kind == "token" {
		kind = op.Grant
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[op.Realm+"/"+kind]++
}

func (c *callCounter) count(realmName, kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[realmName+"/"+kind]
}

// kcCalls counts every Keycloak call the in-process operator makes.
var kcCalls = &callCounter{n: map[string]int{}}
