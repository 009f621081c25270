// Command kubectl-mlflow_token is a kubectl plugin: `kubectl mlflow-token renew|revoke|inspect NAME`.
//
//	renew NAME    force a rotation now, without editing the resource in Git
//	revoke NAME   revoke the current token at Keycloak and rotate (a leaked token)
//	inspect NAME  the non-secret claims of the current token, expiry, next renewal, session,
//	              last failure: what a person needs to debug a 401 from MLflow
//
// renew and revoke set an annotation that the operator honours once and records in status;
// they wait until it has (--wait=false to return at once).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

const usage = `Usage: kubectl mlflow-token [flags] COMMAND NAME

Commands:
  renew NAME     force a rotation of the MLflowAccessToken's token now
  revoke NAME    revoke the current token at Keycloak and rotate (for a leaked token)
  inspect NAME   show the current token's non-secret claims, expiry, renewal, session, failures

Flags:
`

func main() {
	if err := run(os.Args[1:], os.Stdout, time.Now); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer, now func() time.Time) error {
	fs := flag.NewFlagSet("kubectl-mlflow_token", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "Path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config).")
	namespace := fs.String("n", "", "Namespace (default: the kubeconfig context's).")
	fs.StringVar(namespace, "namespace", "", "Namespace (default: the kubeconfig context's).")
	wait := fs.Bool("wait", true, "renew/revoke: wait until the operator has rotated the token.")
	timeout := fs.Duration("timeout", 60*time.Second, "renew/revoke: how long to wait.")
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	if err := fs.Parse(interleave(args)); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errors.New("expected COMMAND NAME")
	}
	cmd, name := fs.Arg(0), fs.Arg(1)

	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = *kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return err
	}
	ns := *namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			return err
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return err
	}
	ctx := context.Background()
	key := types.NamespacedName{Namespace: ns, Name: name}
	switch cmd {
	case "renew":
		return request(ctx, c, key, authv1alpha1.AnnotationRenewRequest, *wait, *timeout, out, now,
			func(s authv1alpha1.MLflowAccessTokenStatus) string { return s.LastRenewalRequest })
	case "revoke":
		return request(ctx, c, key, authv1alpha1.AnnotationRevokeRequest, *wait, *timeout, out, now,
			func(s authv1alpha1.MLflowAccessTokenStatus) string { return s.LastRevocationRequest })
	case "inspect":
		return inspect(ctx, c, key, out, now())
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// interleave lets flags follow the positional arguments (kubectl style: `inspect NAME -n ns`).
func interleave(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && takesValue(a) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

func takesValue(flagName string) bool {
	switch strings.TrimLeft(flagName, "-") {
	case "kubeconfig", "n", "namespace", "timeout":
		return true
	}
	return false
}

// request sets a request annotation and waits until the operator recorded it as honoured.
func request(ctx context.Context, c client.Client, key types.NamespacedName, annotation string, wait bool, timeout time.Duration,
	out io.Writer, now func() time.Time, honoured func(authv1alpha1.MLflowAccessTokenStatus) string) error {
	obj := &authv1alpha1.MLflowAccessToken{}
	if err := c.Get(ctx, key, obj); err != nil {
		return err
	}
	value := now().UTC().Format(time.RFC3339Nano)
	patch := client.MergeFrom(obj.DeepCopy())
	if obj.Annotations == nil {
		obj.Annotations = map[string]string{}
	}
	obj.Annotations[annotation] = value
	if err := c.Patch(ctx, obj, patch); err != nil {
		return err
	}
	fmt.Fprintf(out, "Requested (%s=%s)\n", annotation, value)
	if !wait {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := c.Get(ctx, key, obj); err != nil {
			return err
		}
		if honoured(obj.Status) == value && meta.IsStatusConditionTrue(obj.Status.Conditions, authv1alpha1.ConditionReady) {
			fmt.Fprintf(out, "Done: new token in Secret %s, expires %s, next renewal %s\n", obj.Status.SecretName,
				fmtTime(obj.Status.ExpiresAt.Time), fmtTime(obj.Status.RenewalTime.Time))
			return nil
		}
		if c := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionRenewalFailing); honoured(obj.Status) == value && c != nil && c.Status == "True" {
			return fmt.Errorf("the operator acted on the request but could not obtain a new token: %s: %s", c.Reason, c.Message)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("the operator did not honour the request within %s (is it running?)", timeout)
}

// inspect prints what a person needs to debug an MLflow 401. It never prints the token.
func inspect(ctx context.Context, c client.Client, key types.NamespacedName, out io.Writer, now time.Time) error {
	obj := &authv1alpha1.MLflowAccessToken{}
	if err := c.Get(ctx, key, obj); err != nil {
		return err
	}
	s := obj.Status
	p := func(k, v string) {
		if v != "" {
			fmt.Fprintf(out, "%-22s %s\n", k+":", v)
		}
	}
	p("MLflowAccessToken", key.String())
	p("Keycloak", fmt.Sprintf("%s realm %s client %s, grant %s", obj.Spec.Keycloak.URL, obj.Spec.Keycloak.Realm, obj.Spec.Keycloak.ClientID, obj.Spec.Grant.Type))
	for _, t := range []string{authv1alpha1.ConditionReady, authv1alpha1.ConditionRenewalFailing, authv1alpha1.ConditionRefreshChainExpiring} {
		if cnd := meta.FindStatusCondition(s.Conditions, t); cnd != nil {
			p(t, fmt.Sprintf("%s (%s) %s", cnd.Status, cnd.Reason, cnd.Message))
		}
	}
	p("Secret", s.SecretName)
	if s.ExpiresAt != nil {
		p("Expires", fmt.Sprintf("%s (%s)", fmtTime(s.ExpiresAt.Time), countdown(s.ExpiresAt.Time, now)))
	}
	if s.RenewalTime != nil {
		p("Next renewal", fmt.Sprintf("%s (%s)", fmtTime(s.RenewalTime.Time), countdown(s.RenewalTime.Time, now)))
	}
	p("Rotations", fmt.Sprint(s.Rotations))
	if s.SessionID != "" {
		kind := "online"
		if s.OfflineSession {
			kind = "offline"
		}
		p("Session", s.SessionID+" ("+kind+")")
	}
	if s.RefreshChainExpiresAt != nil {
		p("Refresh chain ends", fmt.Sprintf("%s (%s)", fmtTime(s.RefreshChainExpiresAt.Time), countdown(s.RefreshChainExpiresAt.Time, now)))
	}
	if s.FailedAttempts > 0 && s.LastFailureTime != nil {
		p("Last failure", fmt.Sprintf("%s, %d attempt(s) in a row", fmtTime(s.LastFailureTime.Time), s.FailedAttempts))
	}
	p("Manual renewal", s.LastRenewalRequest)
	p("Manual revocation", s.LastRevocationRequest)

	// The claims of the token actually in the Secret (what a pod sends to MLflow).
	sec := &corev1.Secret{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: s.SecretName}, sec); err != nil || s.SecretName == "" {
		fmt.Fprintf(out, "Token claims:          (cannot read the Secret: %v)\n", err)
		return nil
	}
	claims, err := jwtclaims.Parse(string(sec.Data[tokensecret.KeyToken]))
	if err != nil {
		fmt.Fprintf(out, "Token claims:          (%v)\n", err)
		return nil
	}
	fmt.Fprintln(out, "Token claims (signature not verified; the token itself is not shown):")
	rows := map[string]string{
		"iss": claims.Issuer, "sub": claims.Subject, "preferred_username": claims.PreferredUsername,
		"azp": claims.AuthorizedParty, "aud": strings.Join(claims.Audience, ", "), "scope": claims.Scope,
		"groups": strings.Join(claims.Groups, ", "), "sid": claims.SessionID, "jti": claims.ID,
	}
	if !claims.IssuedAt.IsZero() {
		rows["iat"] = fmtTime(claims.IssuedAt)
	}
	if !claims.ExpiresAt.IsZero() {
		rows["exp"] = fmtTime(claims.ExpiresAt) + " (" + countdown(claims.ExpiresAt, now) + ")"
	}
	keys := make([]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if rows[k] != "" {
			fmt.Fprintf(out, "  %-20s %s\n", k+":", rows[k])
		}
	}
	if len(claims.Audience) == 0 {
		fmt.Fprintln(out, "Hint: the token has no aud claim; if MLflow pins OIDC_AUDIENCE, add an audience mapper to the client.")
	}
	return nil
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func countdown(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d < 0 {
		return (-d).String() + " ago"
	}
	return "in " + d.String()
}
