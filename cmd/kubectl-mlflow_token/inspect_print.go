package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/consumers"
)

// maxEvents bounds the events printed as text (-o json|yaml have them all); the API server
// keeps events for an hour by default, and a series counts as one.
const maxEvents = 20

// printReport is inspect's text output: the resource, its issuer, its Secret and token claims,
// the pods that read the Secret, and its events.
func printReport(w io.Writer, r *report, now time.Time) {
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
	k := r.Keycloak
	p("MLflowAccessToken", r.Namespace+"/"+r.Name)
	if k.Issuer != "" {
		p("Issuer", fmt.Sprintf("%s client %s, grant %s", k.Issuer, firstNonEmpty(k.ClientID, "(the issuer's)"), r.Grant))
		if k.URL != "" {
			p("Keycloak", k.URL+" realm "+k.Realm)
		}
		if c := k.IssuerReady; c != nil {
			p("Issuer Ready", strings.TrimSpace(fmt.Sprintf("%s (%s) %s", c.Status, c.Reason, c.Message)))
		}
		if k.IssuerError != "" {
			p("Issuer Ready", "unknown ("+k.IssuerError+")")
		}
	} else {
		p("Keycloak", fmt.Sprintf("%s realm %s client %s, grant %s", k.URL, k.Realm, k.ClientID, r.Grant))
	}
	printConditions(p, r.Conditions)
	secret := r.Secret
	if len(r.SecretKeys) > 0 {
		secret += " (keys: " + strings.Join(r.SecretKeys, ", ") + ")"
	}
	p("Secret", secret)
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
	p("Delivery", delivery(r.Consumers))
	printClaims(w, p, when, r)
	printPods(w, r)
	printEvents(w, r, now)
}

// printConditions prints Ready first, then the others in the order of status.
func printConditions(p func(k, v string), conds []metav1.Condition) {
	sorted := slices.Clone(conds)
	slices.SortStableFunc(sorted, func(a, b metav1.Condition) int {
		return boolOrder(b.Type == authv1alpha1.ConditionReady) - boolOrder(a.Type == authv1alpha1.ConditionReady)
	})
	for _, cnd := range sorted {
		p(cnd.Type, strings.TrimSpace(fmt.Sprintf("%s (%s) %s", cnd.Status, cnd.Reason, cnd.Message)))
	}
}

func boolOrder(b bool) int {
	if b {
		return 1
	}
	return 0
}

// delivery is the operator's account of the current token's way into labelled pods.
func delivery(c *authv1alpha1.ConsumersStatus) string {
	if c == nil || c.TokenIssuedAt == nil {
		return ""
	}
	s := fmt.Sprintf("token of %s: %d labelled pod(s) mount the Secret, %d nudged, %d failed", fmtTime(c.TokenIssuedAt.Time), c.Pods, c.Nudged, c.Failed)
	if c.NotUpdatable > 0 {
		s += fmt.Sprintf(", %d read it only through env or subPath", c.NotUpdatable)
	}
	if c.LastNudgeTime != nil {
		s += ", last nudge " + fmtTime(c.LastNudgeTime.Time)
	}
	return s
}

func printClaims(w io.Writer, p func(k, v string), when func(*countdown) string, r *report) {
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

func printPods(w io.Writer, r *report) {
	switch {
	case r.PodsError != "":
		printf(w, "Consumer pods:         (%s)\n", r.PodsError)
		return
	case r.Secret == "":
		return
	case len(r.ConsumerPods) == 0:
		printf(w, "Consumer pods:         none in namespace %s reads Secret %s\n", r.Namespace, r.Secret)
		return
	}
	printf(w, "Consumer pods (reading Secret %s):\n", r.Secret)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	printf(tw, "  POD\tPHASE\tREADS\tDELIVERY\n")
	for _, pod := range r.ConsumerPods {
		printf(tw, "  %s\t%s\t%s\t%s\n", pod.Name, firstNonEmpty(pod.Phase, "-"), reads(pod.Reads), pod.Delivery)
	}
	_ = tw.Flush()
}

// reads is "directory /var/run/secrets/mlflow (train), env MLFLOW_TRACKING_TOKEN (train)".
func reads(refs []consumers.Ref) string {
	var parts []string
	for _, r := range refs {
		s := r.How
		if r.Where != "" {
			s += " " + r.Where
		}
		c := r.Container
		if r.Init {
			c = "init " + c
		}
		parts = append(parts, s+" ("+c+")")
	}
	return strings.Join(parts, ", ")
}

func printEvents(w io.Writer, r *report, now time.Time) {
	switch {
	case r.EventsError != "":
		printf(w, "Events:                (%s)\n", r.EventsError)
		return
	case len(r.Events) == 0:
		printf(w, "Events:                none (the API server keeps them for an hour by default)\n")
		return
	}
	printf(w, "Events (newest first):\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	printf(tw, "  LAST SEEN\tTYPE\tREASON\tCOUNT\tFROM\tMESSAGE\n")
	for i, e := range r.Events {
		if i == maxEvents {
			printf(tw, "  (%d older events not shown; -o yaml shows them all)\n", len(r.Events)-maxEvents)
			break
		}
		count := fmt.Sprint(e.Count)
		if e.Count > 1 {
			count += " since " + ago(e.First, now)
		}
		printf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", ago(e.Last, now), e.Type, e.Reason, count, firstNonEmpty(e.From, "-"), e.Note)
	}
	_ = tw.Flush()
}

// ago is "12s ago"; an event stamped a moment ahead of this machine's clock is "0s ago".
func ago(t, now time.Time) string { return max(now.Sub(t), 0).Round(time.Second).String() + " ago" }
