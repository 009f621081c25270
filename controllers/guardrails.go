package controllers

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"

	"k8s.io/apimachinery/pkg/types"
)

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

// checkMLflow refuses a tracking URI the acceptance check may not send a token to: the same
// rules as for Keycloak (no plain HTTP unless the platform allows it for this resource, only the
// allowed hosts), so that a tenant's tracking URI cannot make the operator send requests where the
// platform does not want them. A refusal only skips the check; the token is issued as usual.
func (g Guardrails) checkMLflow(raw string, allowHTTP bool) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "":
		return fmt.Sprintf("%q is not a URL", raw)
	case u.Scheme == "http" && !g.AllowInsecureHTTP && !allowHTTP:
		return fmt.Sprintf("%s is plain HTTP and the platform does not allow plain HTTP (operator flag --allow-insecure-http, or allowInsecureHTTP on a ClusterKeycloakIssuer): MLflow is not asked whether it accepts the token", raw)
	case len(g.AllowedMLflowHosts) > 0 && !hostAllowed(u.Hostname(), g.AllowedMLflowHosts):
		return fmt.Sprintf("the operator may only send tokens to the MLflow hosts %s (flag --allowed-mlflow-hosts); %s is not one of them: MLflow is not asked whether it accepts the token",
			strings.Join(g.AllowedMLflowHosts, ", "), u.Hostname())
	}
	return ""
}

// check refuses a URL the platform does not allow, saying how to allow it.
func (g Guardrails) check(raw string, allowHTTP bool, issuer string) *failure {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return &failure{Reason: authv1alpha1.ReasonURLNotAllowed, Message: fmt.Sprintf("%q is not a URL", raw)}
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return &failure{Reason: authv1alpha1.ReasonURLNotAllowed, Message: "the Keycloak URL must not carry credentials, a query or a fragment"}
	}
	if u.Scheme == "http" && !g.AllowInsecureHTTP && !allowHTTP {
		how := "use https://, or ask the platform team to allow plain HTTP (operator flag --allow-insecure-http, or a ClusterKeycloakIssuer with allowInsecureHTTP: true)"
		if issuer != "" {
			how = "use https:// in " + issuer + ", or allow plain HTTP (operator flag --allow-insecure-http, or allowInsecureHTTP: true on a ClusterKeycloakIssuer)"
		}
		return &failure{Reason: authv1alpha1.ReasonInsecureURL, Message: fmt.Sprintf(
			"%s is plain HTTP: the client's credentials and the tokens would cross the network in clear text; %s", raw, how)}
	}
	if len(g.AllowedHosts) > 0 && !hostAllowed(u.Hostname(), g.AllowedHosts) {
		return &failure{Reason: authv1alpha1.ReasonHostNotAllowed, Message: fmt.Sprintf(
			"the operator may only talk to the Keycloak hosts %s (flag --allowed-keycloak-hosts); %s is not one of them", strings.Join(g.AllowedHosts, ", "), u.Hostname())}
	}
	return nil
}

func hostAllowed(host string, allowed []string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return slices.ContainsFunc(allowed, func(a string) bool {
		a = strings.ToLower(strings.TrimSuffix(a, "."))
		if strings.HasPrefix(a, ".") {
			return strings.HasSuffix(host, a)
		}
		return host == a
	})
}

// noteCredentialChange records that a watched Secret or ConfigMap an issuer references changed.
// Records older than twice the longest backoff are dropped (every so often): a failure that is
// still retried was recorded after them, so they can no longer make it history.
func (r *MLflowAccessTokenReconciler) noteCredentialChange(key types.NamespacedName) {
	now := r.now()
	r.credentialChanges.Store(key, now)
	if r.credentialNotes.Add(1)%64 != 0 {
		return
	}
	horizon := now.Add(-2 * max(r.Backoff.Max, 5*time.Minute))
	r.credentialChanges.Range(func(k, v any) bool {
		if v.(time.Time).Before(horizon) {
			r.credentialChanges.Delete(k)
		}
		return true
	})
}

// credentialsChangedAfter reports whether a credential or CA bundle of t changed after at (as
// far as this process has seen).
func (r *MLflowAccessTokenReconciler) credentialsChangedAfter(t *target, at time.Time) bool {
	var keys []types.NamespacedName
	if t.secret != nil {
		keys = append(keys, t.secret.NamespacedName)
	}
	for _, ref := range []*secretRef{t.ca.configMap, t.ca.secret} {
		if ref != nil {
			keys = append(keys, ref.NamespacedName)
		}
	}
	for _, k := range keys {
		if v, ok := r.credentialChanges.Load(k); ok && v.(time.Time).After(at) {
			return true
		}
	}
	return false
}
