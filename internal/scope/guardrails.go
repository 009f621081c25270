// Package scope holds the platform's rules on where credentials may go and who may use an
// issuer, as pure functions: the guardrails (plain HTTP, allowed hosts), an issuer's namespace
// selector and readiness, and where its CA bundle comes from. The operator (package controllers)
// and the CSI node plugin (internal/csinode) both apply them, so a pod's token is held to the
// same rules as an MLflowAccessToken's.
package scope

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// Refusal is a rule that says no: a condition reason and a message that says how to fix it.
type Refusal struct {
	Reason  string
	Message string
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Message }

// Guardrails are the platform's limits on where the operator sends credentials.
type Guardrails struct {
	// AllowInsecureHTTP lets every resource use plain http:// Keycloak URLs (operator flag).
	AllowInsecureHTTP bool
	// AllowedHosts, when set, are the only Keycloak hosts the operator talks to: exact host
	// names, or suffixes beginning with a dot (".example.com" allows every host under it).
	AllowedHosts []string
	// AllowedMLflowHosts, when set, are the only MLflow hosts the acceptance check sends a token
	// to (same forms as AllowedHosts).
	AllowedMLflowHosts []string
}

// CheckMLflow refuses a tracking URI the acceptance check may not send a token to: the same
// rules as for Keycloak (no plain HTTP unless the platform allows it for this resource, only the
// allowed hosts), so that a tenant's tracking URI cannot make the operator send requests where the
// platform does not want them. A refusal only skips the check; the token is issued as usual.
func (g Guardrails) CheckMLflow(raw string, allowHTTP bool) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "":
		return fmt.Sprintf("%q is not a URL", raw)
	case u.Scheme == "http" && !g.AllowInsecureHTTP && !allowHTTP:
		return fmt.Sprintf("%s is plain HTTP and the platform does not allow plain HTTP (operator flag --allow-insecure-http, or allowInsecureHTTP on a ClusterKeycloakIssuer): MLflow is not asked whether it accepts the token", raw)
	case len(g.AllowedMLflowHosts) > 0 && !HostAllowed(u.Hostname(), g.AllowedMLflowHosts):
		return fmt.Sprintf("the operator may only send tokens to the MLflow hosts %s (flag --allowed-mlflow-hosts); %s is not one of them: MLflow is not asked whether it accepts the token",
			strings.Join(g.AllowedMLflowHosts, ", "), u.Hostname())
	}
	return ""
}

// Check refuses a Keycloak URL the platform does not allow, saying how to allow it. issuer names
// the issuer the URL comes from, for the message ("" for a resource's inline keycloak).
func (g Guardrails) Check(raw string, allowHTTP bool, issuer string) *Refusal {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return &Refusal{Reason: authv1alpha1.ReasonURLNotAllowed, Message: fmt.Sprintf("%q is not a URL", raw)}
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return &Refusal{Reason: authv1alpha1.ReasonURLNotAllowed, Message: "the Keycloak URL must not carry credentials, a query or a fragment"}
	}
	if u.Scheme == "http" && !g.AllowInsecureHTTP && !allowHTTP {
		how := "use https://, or ask the platform team to allow plain HTTP (operator flag --allow-insecure-http, or a ClusterKeycloakIssuer with allowInsecureHTTP: true)"
		if issuer != "" {
			how = "use https:// in " + issuer + ", or allow plain HTTP (operator flag --allow-insecure-http, or allowInsecureHTTP: true on a ClusterKeycloakIssuer)"
		}
		return &Refusal{Reason: authv1alpha1.ReasonInsecureURL, Message: fmt.Sprintf(
			"%s is plain HTTP: the client's credentials and the tokens would cross the network in clear text; %s", raw, how)}
	}
	if len(g.AllowedHosts) > 0 && !HostAllowed(u.Hostname(), g.AllowedHosts) {
		return &Refusal{Reason: authv1alpha1.ReasonHostNotAllowed, Message: fmt.Sprintf(
			"the operator may only talk to the Keycloak hosts %s (flag --allowed-keycloak-hosts); %s is not one of them", strings.Join(g.AllowedHosts, ", "), u.Hostname())}
	}
	return nil
}

// HostAllowed reports whether host is one of allowed: an exact name, or under a suffix that
// begins with a dot.
func HostAllowed(host string, allowed []string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return slices.ContainsFunc(allowed, func(a string) bool {
		a = strings.ToLower(strings.TrimSuffix(a, "."))
		if strings.HasPrefix(a, ".") {
			return strings.HasSuffix(host, a)
		}
		return host == a
	})
}
