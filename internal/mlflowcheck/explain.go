package mlflowcheck

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
)

// explain words a 401 or 403. mlflow-oidc-auth answers every authentication failure with the
// same 401 {"detail": "Authentication required"}, on purpose: its answer never says why. So the
// message reads the likely cause from the token's own claims, compared with what
// mlflow-oidc-auth checks (the seed guide's troubleshooting list: audience, issuer, user, groups,
// expiry), and says that it is the likely cause, not a certainty: the operator does not know
// MLflow's settings.
func explain(uri string, status int, h http.Header, c *jwtclaims.Claims, now time.Time) string {
	var b strings.Builder
	switch status {
	case http.StatusForbidden:
		fmt.Fprintf(&b, "%s answered 403 Forbidden to a read every signed-in user may make: MLflow, or a proxy in front of it, refuses the token.", where(uri))
	default:
		fmt.Fprintf(&b, "%s answered 401: it does not accept the token.", where(uri))
	}
	if strings.HasPrefix(strings.ToLower(h.Get("WWW-Authenticate")), "basic") {
		b.WriteString(" It asks for Basic authentication: the server runs MLflow's basic-auth app, which takes no bearer tokens; it must run mlflow-oidc-auth (mlflow server --app-name oidc-auth).")
		return b.String()
	}
	if c == nil {
		b.WriteString(" The token is not a JWT, so its claims cannot tell why.")
		return b.String()
	}

	user, field := c.Email, "email"
	if user == "" {
		user, field = c.PreferredUsername, "preferred_username"
	}
	var likely []string
	checks := map[string]string{}
	add := func(name string, isLikely bool, text string) {
		if isLikely {
			likely = append(likely, text)
		} else {
			checks[name] = text
		}
	}
	if !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt) {
		likely = append(likely, fmt.Sprintf("the token expired at %s", c.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	switch {
	case len(c.Audience) == 0:
		add("aud", true, "the token has no aud claim; MLflow's OIDC_AUDIENCE must be one of its audiences: give the Keycloak client an audience mapper for it")
	case onlyKeycloakAudiences(c):
		add("aud", true, fmt.Sprintf("its audience %v is only Keycloak's account service; MLflow's OIDC_AUDIENCE must be one of the token's audiences: give the Keycloak client an audience mapper for it", c.Audience))
	default:
		add("aud", false, fmt.Sprintf("OIDC_AUDIENCE must be one of aud %v", c.Audience))
	}
	add("iss", false, fmt.Sprintf("OIDC_ISSUER must equal iss %q exactly (same host as spec.keycloak.url)", c.Issuer))
	if user == "" {
		add("user", true, "the token has neither email nor preferred_username, so mlflow-oidc-auth cannot name the user (OIDC_USERNAME_FIELD)")
	} else {
		add("user", false, fmt.Sprintf("mlflow-oidc-auth calls this user %q (from %s): it must exist in MLflow, or OIDC_PROVISION_ON_BEARER_AUTH must be on", user, field))
	}
	if len(c.Groups) == 0 {
		add("groups", true, "the token has no groups claim; mlflow-oidc-auth auto-provisions a bearer user only if its groups include OIDC_GROUP_NAME or OIDC_ADMIN_GROUP_NAME: add a group-membership mapper, or create the user in MLflow")
	} else {
		add("groups", false, fmt.Sprintf("groups %v must include OIDC_GROUP_NAME or OIDC_ADMIN_GROUP_NAME (for auto-provisioning)", c.Groups))
	}

	var rest []string
	for _, k := range []string{"aud", "iss", "user", "groups"} {
		if t, ok := checks[k]; ok {
			rest = append(rest, t)
		}
	}
	if len(likely) > 0 {
		fmt.Fprintf(&b, " Likely cause, from the token's claims: %s.", strings.Join(likely, "; "))
		fmt.Fprintf(&b, " Otherwise check MLflow's OIDC settings: %s.", strings.Join(rest, "; "))
	} else {
		fmt.Fprintf(&b, " The token's claims show no likely cause; check them against MLflow's OIDC settings: %s.", strings.Join(rest, "; "))
	}
	return b.String()
}

// onlyKeycloakAudiences: the only audience is Keycloak's own account service, which is what a
// Keycloak token carries without an audience mapper (the service account has the default roles,
// which include the account client's). An audience equal to the token's own client is not
// flagged: MLflow may share that client and pin it (the seed guide's setup).
func onlyKeycloakAudiences(c *jwtclaims.Claims) bool {
	return len(c.Audience) > 0 && !slices.ContainsFunc(c.Audience, func(a string) bool { return a != "account" })
}

// where names the server in a message: "MLflow at <uri>", or just "MLflow" for a URI so long that
// it would crowd the explanation out of a condition message (the spec shows it anyway).
func where(uri string) string {
	if len(uri) > 120 {
		return "MLflow (spec.mlflow.trackingURI)"
	}
	return "MLflow at " + uri
}
