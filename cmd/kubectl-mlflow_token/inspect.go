package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

type inspectOptions struct {
	*rootOptions
	output       string
	requireReady bool
}

func newInspectCommand(root *rootOptions) *cobra.Command {
	o := &inspectOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show what a person needs to debug a 401 from MLflow (never the token itself)",
		Long: `Show one MLflowAccessToken: its Keycloak, grant and conditions, when its token expires and
is renewed next (with countdowns), its session, its last failure, and the non-secret claims
of the token that is in its Secret right now (what pods send to MLflow: iss, sub,
preferred_username, azp, aud, scope, groups, exp). The token itself is never shown.

Reading the claims needs get on the Secret; without it the rest is still shown.

--require-ready makes the command exit with 4 when the token is not Ready (no valid token in
the Secret), after printing the report, so scripts and CI can gate on it.

` + exitCodesHelp,
		Example: `  kubectl mlflow-token inspect training-token
  kubectl mlflow-token inspect training-token -o json | jq .claims.aud
  kubectl mlflow-token inspect training-token --require-ready >/dev/null && echo usable`,
		Args:              exactArgs(1, "one NAME"),
		ValidArgsFunction: completeTokenNames(root),
		RunE:              func(c *cobra.Command, args []string) error { return o.run(c.Context(), args[0]) },
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "Output format: json or yaml (default: text).")
	cmd.Flags().BoolVar(&o.requireReady, "require-ready", false, "Exit with code 4 when the token is not Ready.")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// report is inspect's output; -o json|yaml print it as is. It holds no secret.
type report struct {
	Namespace  string             `json:"namespace"`
	Name       string             `json:"name"`
	Keycloak   reportKeycloak     `json:"keycloak"`
	Grant      string             `json:"grant"`
	Ready      bool               `json:"ready"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	Secret     string             `json:"secret,omitempty"`
	ExpiresAt  *countdown         `json:"expiresAt,omitempty"`
	RenewalAt  *countdown         `json:"renewalAt,omitempty"`
	Rotations  int64              `json:"rotations"`
	Session    *reportSession     `json:"session,omitempty"`
	// RefreshChainEndsAt: when the refresh chain ends (RefreshToken and Password grants).
	RefreshChainEndsAt    *countdown     `json:"refreshChainEndsAt,omitempty"`
	LastFailure           *reportFailure `json:"lastFailure,omitempty"`
	LastRenewalRequest    string         `json:"lastRenewalRequest,omitempty"`
	LastRevocationRequest string         `json:"lastRevocationRequest,omitempty"`
	// Claims of the token in the Secret (signature not verified), or why they are missing.
	Claims      *reportClaims `json:"claims,omitempty"`
	ClaimsError string        `json:"claimsError,omitempty"`
}

type reportKeycloak struct {
	// Issuer is "<kind>/<name>" when the resource uses an issuer.
	Issuer   string `json:"issuer,omitempty"`
	URL      string `json:"url,omitempty"`
	Realm    string `json:"realm,omitempty"`
	ClientID string `json:"clientID,omitempty"`
}

// keycloakOf describes where the resource's tokens come from: its inline Keycloak, or its issuer
// (the client it asks for; the issuer's own status says its URL and realm).
func keycloakOf(obj *authv1alpha1.MLflowAccessToken) reportKeycloak {
	if k := obj.Spec.Keycloak; k != nil {
		return reportKeycloak{URL: k.URL, Realm: k.Realm, ClientID: k.ClientID}
	}
	if ref := obj.Spec.IssuerRef; ref != nil {
		return reportKeycloak{Issuer: firstNonEmpty(ref.Kind, authv1alpha1.KindKeycloakIssuer) + "/" + ref.Name, ClientID: obj.Spec.ClientID}
	}
	return reportKeycloak{}
}

// countdown is a point in time and how far it is from now (negative: past).
type countdown struct {
	Time    time.Time `json:"time"`
	Seconds int64     `json:"secondsFromNow"`
}

type reportSession struct {
	ID      string `json:"id"`
	Offline bool   `json:"offline"`
}

type reportFailure struct {
	Time     time.Time `json:"time"`
	Attempts int32     `json:"attemptsInARow"`
	Reason   string    `json:"reason,omitempty"`
	Message  string    `json:"message,omitempty"`
}

type reportClaims struct {
	Issuer            string     `json:"iss,omitempty"`
	Subject           string     `json:"sub,omitempty"`
	PreferredUsername string     `json:"preferred_username,omitempty"`
	AuthorizedParty   string     `json:"azp,omitempty"`
	Audience          []string   `json:"aud,omitempty"`
	Scope             string     `json:"scope,omitempty"`
	Groups            []string   `json:"groups,omitempty"`
	SessionID         string     `json:"sid,omitempty"`
	ID                string     `json:"jti,omitempty"`
	IssuedAt          *time.Time `json:"iat,omitempty"`
	ExpiresAt         *countdown `json:"exp,omitempty"`
}

func (o *inspectOptions) run(ctx context.Context, name string) error {
	if o.output != "" && o.output != "json" && o.output != "yaml" {
		return usagef("unknown output format %q: use json or yaml", o.output)
	}
	ns, c, err := o.connect()
	if err != nil {
		return err
	}
	obj, err := getToken(ctx, c, ns, name)
	if err != nil {
		return err
	}
	r := buildReport(ctx, c, obj, o.now())
	switch o.output {
	case "json":
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		printf(o.streams.Out, "%s\n", b)
	case "yaml":
		b, err := yaml.Marshal(r)
		if err != nil {
			return err
		}
		printf(o.streams.Out, "%s", b)
	default:
		printReport(o.streams.Out, r)
	}
	if o.requireReady && !r.Ready {
		why := "no Ready condition yet"
		if cnd := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionReady); cnd != nil {
			why = cnd.Reason + ": " + cnd.Message
		}
		return notReadyError{msg: fmt.Sprintf("mlflowaccesstoken %s/%s is not Ready (%s)", ns, name, why)}
	}
	return nil
}

// buildReport gathers the report; the claims come from the Secret, the rest from the resource.
func buildReport(ctx context.Context, c client.Reader, obj *authv1alpha1.MLflowAccessToken, now time.Time) *report {
	s := obj.Status
	at := func(t *metav1.Time) *countdown {
		if t == nil {
			return nil
		}
		return &countdown{Time: t.UTC(), Seconds: int64(t.Sub(now).Round(time.Second) / time.Second)}
	}
	r := &report{
		Namespace: obj.Namespace, Name: obj.Name,
		Keycloak:   keycloakOf(obj),
		Grant:      string(obj.Spec.Grant.Type),
		Ready:      meta.IsStatusConditionTrue(s.Conditions, authv1alpha1.ConditionReady),
		Conditions: s.Conditions, Secret: s.SecretName,
		ExpiresAt: at(s.ExpiresAt), RenewalAt: at(s.RenewalTime), Rotations: s.Rotations,
		RefreshChainEndsAt: at(s.RefreshChainExpiresAt),
		LastRenewalRequest: s.LastRenewalRequest, LastRevocationRequest: s.LastRevocationRequest,
	}
	if s.SessionID != "" {
		r.Session = &reportSession{ID: s.SessionID, Offline: s.OfflineSession}
	}
	if s.FailedAttempts > 0 && s.LastFailureTime != nil {
		f := &reportFailure{Time: s.LastFailureTime.UTC(), Attempts: s.FailedAttempts}
		if cnd := meta.FindStatusCondition(s.Conditions, authv1alpha1.ConditionRenewalFailing); cnd != nil && cnd.Status == metav1.ConditionTrue {
			f.Reason, f.Message = cnd.Reason, cnd.Message
		}
		r.LastFailure = f
	}

	if s.SecretName == "" {
		r.ClaimsError = "no Secret yet"
		return r
	}
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: s.SecretName}, sec); err != nil {
		switch {
		case apierrors.IsForbidden(err):
			r.ClaimsError = fmt.Sprintf("you may not read Secret %s (needs get on secrets in namespace %s)", s.SecretName, obj.Namespace)
		case apierrors.IsNotFound(err):
			r.ClaimsError = fmt.Sprintf("Secret %s does not exist", s.SecretName)
		default:
			r.ClaimsError = "cannot read the Secret: " + err.Error()
		}
		return r
	}
	claims, err := jwtclaims.Parse(string(sec.Data[tokensecret.KeyToken]))
	if err != nil {
		r.ClaimsError = err.Error()
		return r
	}
	rc := &reportClaims{
		Issuer: claims.Issuer, Subject: claims.Subject, PreferredUsername: claims.PreferredUsername,
		AuthorizedParty: claims.AuthorizedParty, Audience: claims.Audience, Scope: claims.Scope,
		Groups: claims.Groups, SessionID: claims.SessionID, ID: claims.ID,
	}
	if !claims.IssuedAt.IsZero() {
		t := claims.IssuedAt.UTC()
		rc.IssuedAt = &t
	}
	if !claims.ExpiresAt.IsZero() {
		rc.ExpiresAt = at(&metav1.Time{Time: claims.ExpiresAt})
	}
	r.Claims = rc
	return r
}

// printReport is inspect's text output.
func printReport(w io.Writer, r *report) {
	p := func(k, v string) {
		if v != "" {
			printf(w, "%-22s %s\n", k+":", v)
		}
	}
	when := func(c *countdown) string {
		if c == nil {
			return ""
		}
		return fmtTime(c.Time) + " (" + relative(time.Duration(c.Seconds)*time.Second) + ")"
	}
	p("MLflowAccessToken", r.Namespace+"/"+r.Name)
	if r.Keycloak.Issuer != "" {
		p("Issuer", fmt.Sprintf("%s client %s, grant %s", r.Keycloak.Issuer, firstNonEmpty(r.Keycloak.ClientID, "(the issuer's)"), r.Grant))
	} else {
		p("Keycloak", fmt.Sprintf("%s realm %s client %s, grant %s", r.Keycloak.URL, r.Keycloak.Realm, r.Keycloak.ClientID, r.Grant))
	}
	for _, t := range []string{authv1alpha1.ConditionReady, authv1alpha1.ConditionRenewalFailing, authv1alpha1.ConditionRefreshChainExpiring} {
		if cnd := meta.FindStatusCondition(r.Conditions, t); cnd != nil {
			p(t, strings.TrimSpace(fmt.Sprintf("%s (%s) %s", cnd.Status, cnd.Reason, cnd.Message)))
		}
	}
	p("Secret", r.Secret)
	p("Expires", when(r.ExpiresAt))
	p("Next renewal", when(r.RenewalAt))
	p("Rotations", fmt.Sprint(r.Rotations))
	if r.Session != nil {
		kind := "online"
		if r.Session.Offline {
			kind = "offline"
		}
		p("Session", r.Session.ID+" ("+kind+")")
	}
	p("Refresh chain ends", when(r.RefreshChainEndsAt))
	if f := r.LastFailure; f != nil {
		msg := fmt.Sprintf("%s, %d attempt(s) in a row", fmtTime(f.Time), f.Attempts)
		if f.Reason != "" {
			msg += ": " + f.Reason + ": " + f.Message
		}
		p("Last failure", msg)
	}
	p("Manual renewal", r.LastRenewalRequest)
	p("Manual revocation", r.LastRevocationRequest)
	if r.Claims == nil {
		p("Token claims", "("+r.ClaimsError+")")
		return
	}
	printf(w, "Token claims (signature not verified; the token itself is not shown):\n")
	c := r.Claims
	iat := ""
	if c.IssuedAt != nil {
		iat = fmtTime(*c.IssuedAt)
	}
	rows := [][2]string{
		{"aud", strings.Join(c.Audience, ", ")}, {"azp", c.AuthorizedParty}, {"exp", when(c.ExpiresAt)},
		{"groups", strings.Join(c.Groups, ", ")}, {"iat", iat}, {"iss", c.Issuer}, {"jti", c.ID},
		{"preferred_username", c.PreferredUsername}, {"scope", c.Scope}, {"sid", c.SessionID}, {"sub", c.Subject},
	}
	for _, row := range rows {
		if row[1] != "" {
			printf(w, "  %-20s %s\n", row[0]+":", row[1])
		}
	}
	if len(c.Audience) == 0 {
		printf(w, "Hint: the token has no aud claim; if MLflow pins OIDC_AUDIENCE, add an audience mapper to the client.\n")
	}
}

// relative is "in 4m10s" or "3m0s ago".
func relative(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 0 {
		return (-d).String() + " ago"
	}
	return "in " + d.String()
}
