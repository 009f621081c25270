package main

import (
	"context"
	"encoding/json"
	"fmt"
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
		Use:     "inspect NAME",
		Aliases: []string{"status"},
		Short:   "Show one token's whole story: conditions, issuer, Secret, claims, consumer pods, events",
		Long: `Show one MLflowAccessToken in one view (the token itself is never shown):
  - its Keycloak or issuer (KeycloakIssuer or ClusterKeycloakIssuer) and whether that is Ready,
    its grant and all its conditions;
  - its Secret (the names of its keys), when the token expires and is renewed next (with
    countdowns), its session, its last failure;
  - the non-secret claims of the token in the Secret right now (what pods send to MLflow: iss,
    sub, preferred_username, azp, aud, scope, groups, exp);
  - the pods in its namespace that read the Secret (volume, env or envFrom), and how new tokens
    reach each: nudged by the operator (labelled auth.mlflow-token-operator.io/consumer=true and
    mounting the Secret as a directory), at the kubelet's periodic sync, or never (env, subPath);
  - its events, newest first, a repeated event once with its count.

Each part needs get or list on what it reads (the Secret, the issuer, pods, events); without it
the rest is still shown, with what was not readable and why. "status" is another name for it.

--require-ready makes the command exit with 4 when the token is not Ready (no valid token in
the Secret), after printing the report, so scripts and CI can gate on it.

` + exitCodesHelp,
		Example: `  kubectl mlflow-token inspect training-token
  kubectl mlflow-token status training-token
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
	// SecretKeys are the names of the Secret's keys (never their values).
	SecretKeys []string `json:"secretKeys,omitempty"`
	// Consumers is the operator's account of how the current token reached labelled pods.
	Consumers *authv1alpha1.ConsumersStatus `json:"consumers,omitempty"`
	// ConsumerPods read the Secret (volume, env, envFrom), or PodsError says why they are unknown.
	ConsumerPods []reportPod `json:"consumerPods,omitempty"`
	PodsError    string      `json:"podsError,omitempty"`
	// Events about the resource, newest first, or EventsError says why they are unknown.
	Events      []reportEvent `json:"events,omitempty"`
	EventsError string        `json:"eventsError,omitempty"`
}

type reportKeycloak struct {
	// Issuer is "<kind>/<name>" when the resource uses an issuer.
	Issuer   string `json:"issuer,omitempty"`
	URL      string `json:"url,omitempty"`
	Realm    string `json:"realm,omitempty"`
	ClientID string `json:"clientID,omitempty"`
	// IssuerReady is the issuer's Ready condition, or IssuerError says why it is unknown.
	IssuerReady *reportCondition `json:"issuerReady,omitempty"`
	IssuerError string           `json:"issuerError,omitempty"`
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
	describeIssuer(ctx, c, obj, &r.Keycloak)
	r.Events, r.EventsError = resourceEvents(ctx, c, obj)
	if r.Secret != "" {
		r.ConsumerPods, r.PodsError = consumerPods(ctx, c, obj.Namespace, r.Secret)
	}
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
		printReport(o.streams.Out, r, o.now())
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
		Consumers: s.Consumers,
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
	r.SecretKeys = sortedKeys(sec.Data)
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

// relative is "in 4m10s" or "3m0s ago".
func relative(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 0 {
		return (-d).String() + " ago"
	}
	return "in " + d.String()
}
