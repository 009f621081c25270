package keycloak

// Federated client authentication (Keycloak 26.6+): a client without a secret authenticates with
// a JWT that an identity provider of the realm issued, here a Kubernetes service-account token.
// The realm holds an identity provider of type "kubernetes" whose issuer is the cluster's
// service-account issuer; the client's authenticator is "federated-jwt" and its attributes name
// the provider's alias and the token's subject. Keycloak picks the client by (issuer, sub) of
// the token, so a subject may be bound to one client only. FEDERATED.md records what the real
// server does with such tokens.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// Names Keycloak 26.7 uses (read from its source and checked by test/federated).
const (
	// KubernetesProviderID is the identity provider type ("providerId") for Kubernetes
	// service-account issuers.
	KubernetesProviderID = "kubernetes"
	// FederatedJWTAuthenticator is the client authenticator ("clientAuthenticatorType") that
	// accepts a JWT of an identity provider ("Signed JWT - Federated" in the admin console).
	FederatedJWTAuthenticator = "federated-jwt"
	// AttrCredentialIssuer is the client attribute holding the identity provider's alias (not
	// its issuer URL).
	AttrCredentialIssuer = "jwt.credential.issuer"
	// AttrCredentialSubject is the client attribute holding the token's `sub`.
	AttrCredentialSubject = "jwt.credential.sub"
	// ClientAssertionTypeJWT is the client_assertion_type of the token request.
	ClientAssertionTypeJWT = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// idpConfigMaxExp is the identity provider setting that caps how long after its `iat` a
	// token is accepted (Keycloak's default for Kubernetes: 3600 s).
	idpConfigMaxExp = "fedClientAssertionMaxExp"
	// idpConfigClockSkew is the identity provider setting for the allowed clock skew (seconds).
	idpConfigClockSkew = "allowedClockSkew"
)

// ServiceAccountSubject is the `sub` of a Kubernetes service-account token.
func ServiceAccountSubject(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// KubernetesIdP is an identity provider of type kubernetes.
type KubernetesIdP struct {
	// Alias names the provider in the realm; clients refer to it (default "kubernetes").
	Alias string
	// IssuerURL is the service-account issuer, exactly the tokens' `iss` (kube-apiserver's
	// --service-account-issuer). Keycloak fetches IssuerURL+"/.well-known/openid-configuration"
	// and the jwks_uri it names when it first needs a key.
	IssuerURL string
	// MaxTokenAge, when positive, replaces Keycloak's limit of 3600 s after a token's `iat`
	// beyond which the token is refused (whatever its `exp`). Whole seconds.
	MaxTokenAge time.Duration
	// AllowedClockSkew, when positive, is how far Keycloak's clock may lag behind the API
	// server's: with the default 0, a token whose `iat`/`nbf` is ahead of Keycloak's clock is
	// refused ("Token was issued in the future"). Whole seconds.
	AllowedClockSkew time.Duration
}

// ConfigureKubernetesIdP creates the identity provider in realm, or updates it when one with
// the same alias exists (an update also drops Keycloak's cached keys of that provider).
func (s *Server) ConfigureKubernetesIdP(ctx context.Context, realm string, idp KubernetesIdP) error {
	if idp.Alias == "" {
		idp.Alias = KubernetesProviderID
	}
	if idp.IssuerURL == "" {
		return fmt.Errorf("keycloak: identity provider %q: no issuer URL", idp.Alias)
	}
	cfg := map[string]string{"issuer": idp.IssuerURL}
	if idp.MaxTokenAge > 0 {
		cfg[idpConfigMaxExp] = strconv.Itoa(int(idp.MaxTokenAge / time.Second))
	}
	if idp.AllowedClockSkew > 0 {
		cfg[idpConfigClockSkew] = strconv.Itoa(int(idp.AllowedClockSkew / time.Second))
	}
	rep := map[string]any{
		"alias":      idp.Alias,
		"providerId": KubernetesProviderID,
		"enabled":    true,
		"config":     cfg,
	}
	base := "/admin/realms/" + url.PathEscape(realm) + "/identity-provider/instances"
	// Look first: a POST of an alias that exists is answered 400 "Issuer URL already used",
	// not 409, when the issuer is unchanged (Keycloak validates the issuer first).
	status, body, err := s.adminJSON(ctx, http.MethodGet, base+"/"+url.PathEscape(idp.Alias), nil)
	if err != nil {
		return err
	}
	switch status {
	case http.StatusNotFound:
		status, body, err = s.adminJSON(ctx, http.MethodPost, base, rep)
		if err != nil {
			return err
		}
		if status != http.StatusCreated {
			return fmt.Errorf("keycloak: creating identity provider %q in realm %s: HTTP %d: %s", idp.Alias, realm, status, body)
		}
		return nil
	case http.StatusOK:
	default:
		return fmt.Errorf("keycloak: identity provider %q in realm %s: HTTP %d: %s", idp.Alias, realm, status, body)
	}
	// Update: start from the stored representation, whose internalId must be sent back (without
	// it Keycloak takes the update for a second provider with the same issuer and refuses it).
	var cur map[string]any
	if err := json.Unmarshal(body, &cur); err != nil {
		return fmt.Errorf("keycloak: identity provider %q in realm %s: %w", idp.Alias, realm, err)
	}
	if cur["providerId"] != KubernetesProviderID {
		return fmt.Errorf("keycloak: identity provider %q in realm %s is of type %v, not %s", idp.Alias, realm, cur["providerId"], KubernetesProviderID)
	}
	curCfg, _ := cur["config"].(map[string]any)
	if curCfg == nil {
		curCfg = map[string]any{}
	}
	delete(curCfg, idpConfigMaxExp)
	delete(curCfg, idpConfigClockSkew)
	for k, v := range cfg {
		curCfg[k] = v
	}
	cur["config"], cur["enabled"] = curCfg, true
	status, body, err = s.adminJSON(ctx, http.MethodPut, base+"/"+url.PathEscape(idp.Alias), cur)
	if err != nil {
		return err
	}
	if status != http.StatusNoContent && status != http.StatusOK {
		return fmt.Errorf("keycloak: updating identity provider %q in realm %s: HTTP %d: %s", idp.Alias, realm, status, body)
	}
	return nil
}

// FederatedClient is a confidential client without a secret that authenticates with a token of
// a Kubernetes identity provider and gets tokens for its own service account
// (client_credentials).
type FederatedClient struct {
	ClientID string
	// IdPAlias is the identity provider's alias (default "kubernetes").
	IdPAlias string
	// Subject is the token's `sub`, e.g. ServiceAccountSubject("team-a", "sa1").
	Subject string
	// AccessTokenLifespan, when positive, overrides the realm's access-token lifespan.
	AccessTokenLifespan time.Duration
}

// AddFederatedClient creates the client in realm and returns its id (the UUID the admin API
// addresses it by). It also adds an audience mapper naming the client itself, so the client can
// introspect its own tokens.
func (s *Server) AddFederatedClient(ctx context.Context, realm string, c FederatedClient) (string, error) {
	if c.IdPAlias == "" {
		c.IdPAlias = KubernetesProviderID
	}
	if c.ClientID == "" || c.Subject == "" {
		return "", fmt.Errorf("keycloak: federated client: ClientID and Subject are required")
	}
	attrs := map[string]string{AttrCredentialIssuer: c.IdPAlias, AttrCredentialSubject: c.Subject}
	if c.AccessTokenLifespan > 0 {
		attrs["access.token.lifespan"] = strconv.Itoa(int(c.AccessTokenLifespan / time.Second))
	}
	rep := map[string]any{
		"clientId":                  c.ClientID,
		"protocol":                  "openid-connect",
		"enabled":                   true,
		"publicClient":              false,
		"clientAuthenticatorType":   FederatedJWTAuthenticator,
		"serviceAccountsEnabled":    true,
		"standardFlowEnabled":       false,
		"directAccessGrantsEnabled": false,
		"attributes":                attrs,
		"protocolMappers": []map[string]any{{
			"name":           "audience-self",
			"protocol":       "openid-connect",
			"protocolMapper": "oidc-audience-mapper",
			"config": map[string]string{
				"included.client.audience":  c.ClientID,
				"access.token.claim":        "true",
				"introspection.token.claim": "true",
			},
		}},
	}
	req, err := s.adminRequest(ctx, http.MethodPost, "/admin/realms/"+url.PathEscape(realm)+"/clients", rep)
	if err != nil {
		return "", err
	}
	resp, err := adminHTTP.Do(req)
	if err != nil {
		return "", fmt.Errorf("keycloak: creating client %s: %w", c.ClientID, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("keycloak: creating client %s in realm %s: HTTP %d: %s", c.ClientID, realm, resp.StatusCode, body)
	}
	return path.Base(resp.Header.Get("Location")), nil
}

// FederatedFlowCopy is the name EnsureFederatedClientAuthenticator gives its copy of a built-in
// client-authentication flow that lacks the federated-jwt authenticator.
const FederatedFlowCopy = "clients-federated"

// EnsureFederatedClientAuthenticator makes sure the realm's client-authentication flow runs the
// federated-jwt authenticator as an alternative, and reports whether it changed anything.
//
// Realms created while the feature was on (26.6+, where it is on by default) have it in their
// built-in "clients" flow. Realms created earlier, or imported from an export whose client flow
// lacks it, do not, and Keycloak's upgrade migrations do not add it. Keycloak refuses to add an
// execution to a built-in flow ("It is illegal to add execution to a built in flow"), so such a
// realm gets a copy of its flow (FederatedFlowCopy) with the authenticator added, bound as the
// realm's client-authentication flow. An execution that is present but DISABLED is set to
// ALTERNATIVE (that is allowed in a built-in flow).
func (s *Server) EnsureFederatedClientAuthenticator(ctx context.Context, realm string) (bool, error) {
	realmPath := "/admin/realms/" + url.PathEscape(realm)
	status, body, err := s.adminJSON(ctx, http.MethodGet, realmPath, nil)
	if err != nil {
		return false, err
	}
	if status != http.StatusOK {
		return false, fmt.Errorf("keycloak: realm %s: HTTP %d: %s", realm, status, body)
	}
	var rep struct {
		ClientAuthenticationFlow string `json:"clientAuthenticationFlow"`
	}
	if err := json.Unmarshal(body, &rep); err != nil || rep.ClientAuthenticationFlow == "" {
		return false, fmt.Errorf("keycloak: realm %s: no clientAuthenticationFlow in %.200s", realm, body)
	}
	flowAlias := rep.ClientAuthenticationFlow
	executions := func(alias string) string {
		return realmPath + "/authentication/flows/" + url.PathEscape(alias) + "/executions"
	}
	find := func(alias string) (map[string]any, error) {
		status, body, err := s.adminJSON(ctx, http.MethodGet, executions(alias), nil)
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK {
			return nil, fmt.Errorf("keycloak: flow %s of realm %s: HTTP %d: %s", alias, realm, status, body)
		}
		var execs []map[string]any
		if err := json.Unmarshal(body, &execs); err != nil {
			return nil, fmt.Errorf("keycloak: flow %s of realm %s: %w", alias, realm, err)
		}
		for _, e := range execs {
			if e["providerId"] == FederatedJWTAuthenticator {
				return e, nil
			}
		}
		return nil, nil
	}
	exec, err := find(flowAlias)
	if err != nil {
		return false, err
	}
	changed := false
	if exec == nil {
		builtIn, err := s.flowIsBuiltIn(ctx, realm, flowAlias)
		if err != nil {
			return false, err
		}
		if builtIn {
			status, body, err := s.adminJSON(ctx, http.MethodPost, realmPath+"/authentication/flows/"+url.PathEscape(flowAlias)+"/copy", map[string]string{"newName": FederatedFlowCopy})
			if err != nil {
				return false, err
			}
			if status != http.StatusCreated {
				return false, fmt.Errorf("keycloak: copying flow %s of realm %s to %s: HTTP %d: %s", flowAlias, realm, FederatedFlowCopy, status, body)
			}
			flowAlias = FederatedFlowCopy
		}
		status, body, err := s.adminJSON(ctx, http.MethodPost, executions(flowAlias)+"/execution", map[string]string{"provider": FederatedJWTAuthenticator})
		if err != nil {
			return false, err
		}
		if status != http.StatusCreated {
			return false, fmt.Errorf("keycloak: adding %s to flow %s of realm %s: HTTP %d: %s", FederatedJWTAuthenticator, flowAlias, realm, status, body)
		}
		changed = true
		if exec, err = find(flowAlias); err != nil {
			return false, err
		}
		if exec == nil {
			return false, fmt.Errorf("keycloak: %s added to flow %s of realm %s but not listed", FederatedJWTAuthenticator, flowAlias, realm)
		}
	}
	// A new execution starts DISABLED; in a client flow every authenticator is an alternative.
	if exec["requirement"] != "ALTERNATIVE" {
		exec["requirement"] = "ALTERNATIVE"
		status, body, err := s.adminJSON(ctx, http.MethodPut, executions(flowAlias), exec)
		if err != nil {
			return false, err
		}
		if status != http.StatusNoContent && status != http.StatusAccepted && status != http.StatusOK {
			return false, fmt.Errorf("keycloak: enabling %s in flow %s of realm %s: HTTP %d: %s", FederatedJWTAuthenticator, flowAlias, realm, status, body)
		}
		changed = true
	}
	if flowAlias != rep.ClientAuthenticationFlow {
		status, body, err := s.adminJSON(ctx, http.MethodPut, realmPath, map[string]string{"clientAuthenticationFlow": flowAlias})
		if err != nil {
			return false, err
		}
		if status != http.StatusNoContent && status != http.StatusOK {
			return false, fmt.Errorf("keycloak: binding flow %s as the client authentication flow of realm %s: HTTP %d: %s", flowAlias, realm, status, body)
		}
	}
	return changed, nil
}

func (s *Server) flowIsBuiltIn(ctx context.Context, realm, alias string) (bool, error) {
	status, body, err := s.adminJSON(ctx, http.MethodGet, "/admin/realms/"+url.PathEscape(realm)+"/authentication/flows", nil)
	if err != nil {
		return false, err
	}
	if status != http.StatusOK {
		return false, fmt.Errorf("keycloak: flows of realm %s: HTTP %d: %s", realm, status, body)
	}
	var flows []struct {
		Alias   string `json:"alias"`
		BuiltIn bool   `json:"builtIn"`
	}
	if err := json.Unmarshal(body, &flows); err != nil {
		return false, fmt.Errorf("keycloak: flows of realm %s: %w", realm, err)
	}
	for _, f := range flows {
		if f.Alias == alias {
			return f.BuiltIn, nil
		}
	}
	return false, fmt.Errorf("keycloak: realm %s has no flow %q", realm, alias)
}

// Admin sends a request to Keycloak's admin REST API (path starting with /admin/) as the
// bootstrap admin, with body (if not nil) encoded as JSON, and returns the status and the body.
func (s *Server) Admin(ctx context.Context, method, path string, body any) (int, []byte, error) {
	return s.adminJSON(ctx, method, path, body)
}

var adminHTTP = &http.Client{Timeout: 30 * time.Second}

func (s *Server) adminRequest(ctx context.Context, method, p string, body any) (*http.Request, error) {
	tok, err := s.AdminToken(ctx)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL()+p, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func (s *Server) adminJSON(ctx context.Context, method, p string, body any) (int, []byte, error) {
	req, err := s.adminRequest(ctx, method, p, body)
	if err != nil {
		return 0, nil, err
	}
	resp, err := adminHTTP.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("keycloak: %s %s: %w", method, p, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, nil
}
