package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// request is an annotation the operator honours once per value and records in status.
type request struct {
	annotation string
	noun, done string // "renewal", "renewed"
	honoured   func(authv1alpha1.MLflowAccessTokenStatus) string
}

var (
	renewRequest = request{
		annotation: authv1alpha1.AnnotationRenewRequest, noun: "renewal", done: "renewed",
		honoured: func(s authv1alpha1.MLflowAccessTokenStatus) string { return s.LastRenewalRequest },
	}
	revokeRequest = request{
		annotation: authv1alpha1.AnnotationRevokeRequest, noun: "revocation", done: "revoked and renewed",
		honoured: func(s authv1alpha1.MLflowAccessTokenStatus) string { return s.LastRevocationRequest },
	}
)

type requestOptions struct {
	*rootOptions
	req           request
	selector      string
	all           bool
	allNamespaces bool
	wait          bool
	timeout       time.Duration
}

func newRenewCommand(root *rootOptions) *cobra.Command {
	return newRequestCommand(root, renewRequest, "renew",
		"Rotate tokens now, without editing the resources in Git",
		`Ask the operator to rotate the tokens now: it obtains a new token from Keycloak and writes it
into the Secret, as at a scheduled renewal (failure back-off is skipped). The request is an
annotation (`+authv1alpha1.AnnotationRenewRequest+`) that the operator honours once and records
in status.lastRenewalRequest; the command waits until it has (--wait=false: return at once).
Needs patch on the resources.`,
		`  kubectl mlflow-token renew training-token
  kubectl mlflow-token renew -l team=a
  kubectl mlflow-token renew --all -A --wait=false`)
}

func newRevokeCommand(root *rootOptions) *cobra.Command {
	return newRequestCommand(root, revokeRequest, "revoke",
		"Revoke the current tokens at Keycloak and rotate (a leaked token)",
		`Ask the operator to revoke the access token that is in the Secret at Keycloak, then put a new
one there. Use it for a leaked token. Keycloak's introspection then rejects the old token at
once, but a server that validates JWTs locally (mlflow-oidc-auth does) accepts it until it
expires: short token lifetimes are the real control. The request is an annotation
(`+authv1alpha1.AnnotationRevokeRequest+`) recorded in status.lastRevocationRequest; the command
waits until the operator has honoured it (--wait=false: return at once). Needs patch on the
resources.`,
		`  kubectl mlflow-token revoke training-token
  kubectl mlflow-token revoke -l leaked=true -A`)
}

func newRequestCommand(root *rootOptions, req request, verb, short, long, example string) *cobra.Command {
	o := &requestOptions{rootOptions: root, req: req}
	cmd := &cobra.Command{
		Use:               verb + " (NAME... | -l SELECTOR | --all)",
		Short:             short,
		Long:              long + "\n\n" + exitCodesHelp,
		Example:           example,
		ValidArgsFunction: completeTokenNames(root),
		RunE:              func(c *cobra.Command, args []string) error { return o.run(c.Context(), args) },
	}
	cmd.Flags().StringVarP(&o.selector, "selector", "l", "", "Act on the tokens matching this label selector.")
	cmd.Flags().BoolVar(&o.all, "all", false, "Act on all tokens of the namespace (with -A: of all namespaces).")
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "With -l or --all: in all namespaces.")
	cmd.Flags().BoolVar(&o.wait, "wait", true, "Wait until the operator has honoured the request.")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 60*time.Second, "How long to wait for the operator.")
	return cmd
}

func (o *requestOptions) run(ctx context.Context, names []string) error {
	byName := len(names) > 0
	switch {
	case byName && (o.selector != "" || o.all):
		return usagef("name arguments cannot be combined with -l or --all")
	case !byName && o.selector == "" && !o.all:
		return usagef("name the tokens: NAME..., -l SELECTOR or --all")
	case o.selector != "" && o.all:
		return usagef("-l and --all cannot be combined")
	case o.allNamespaces && byName:
		return usagef("-A works with -l or --all, not with names")
	case o.timeout <= 0 && o.wait:
		return usagef("--timeout must be positive")
	}
	sel, err := parseSelector(o.selector)
	if err != nil {
		return err
	}
	ns, c, err := o.connect()
	if err != nil {
		return err
	}

	var objs []*authv1alpha1.MLflowAccessToken
	var errs []error
	if byName {
		for _, name := range names {
			obj, err := getToken(ctx, c, ns, name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			objs = append(objs, obj)
		}
	} else {
		list := &authv1alpha1.MLflowAccessTokenList{}
		var opts []client.ListOption
		if !o.allNamespaces {
			opts = append(opts, client.InNamespace(ns))
		}
		if sel != nil {
			opts = append(opts, client.MatchingLabelsSelector{Selector: sel})
		}
		if err := c.List(ctx, list, opts...); err != nil {
			return apiError(err, ns, "")
		}
		for i := range list.Items {
			objs = append(objs, &list.Items[i])
		}
		if len(objs) == 0 {
			printf(o.streams.ErrOut, "No MLflowAccessTokens matched.\n")
		}
	}
	if len(objs) > 0 {
		if err := requestAndWait(ctx, c, objs, o.req, o.wait, o.timeout, o.now, o.streams.Out); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pending is one request being waited for.
type pending struct {
	key   types.NamespacedName
	value string
	// attempts and failureAt are the failure state last seen; failures counts the failed
	// attempts seen since the request.
	attempts  int32
	failureAt *metav1.Time
	failures  int
}

// requestAndWait sets the request annotation on each object and, with wait, polls until the
// operator has honoured each request with a Ready token, a failure that needs a person shows,
// or timeout passes.
func requestAndWait(ctx context.Context, c client.Client, objs []*authv1alpha1.MLflowAccessToken, req request,
	wait bool, timeout time.Duration, now func() time.Time, out io.Writer) error {
	var errs []error
	var waiting []*pending
	for _, obj := range objs {
		p := &pending{key: client.ObjectKeyFromObject(obj), value: now().UTC().Format(time.RFC3339Nano)}
		// The failure state right before the request (obj may have been read minutes ago).
		fresh := &authv1alpha1.MLflowAccessToken{}
		if err := c.Get(ctx, p.key, fresh); err != nil {
			errs = append(errs, apiError(err, p.key.Namespace, p.key.Name))
			continue
		}
		p.attempts, p.failureAt = fresh.Status.FailedAttempts, fresh.Status.LastFailureTime
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{req.annotation: p.value}}})
		if err := c.Patch(ctx, fresh, client.RawPatch(types.MergePatchType, patch)); err != nil {
			errs = append(errs, fmt.Errorf("requesting the %s of mlflowaccesstoken %s: %w", req.noun, p.key, apiError(err, p.key.Namespace, p.key.Name)))
			continue
		}
		printf(out, "mlflowaccesstoken/%s: %s requested\n", name(p.key, objs), req.noun)
		waiting = append(waiting, p)
	}
	if !wait {
		return errors.Join(errs...)
	}
	deadline := time.Now().Add(timeout)
	for len(waiting) > 0 {
		var still []*pending
		for _, p := range waiting {
			done, err := check(ctx, c, p, req, now(), out, name(p.key, objs))
			switch {
			case err != nil:
				errs = append(errs, err)
			case !done:
				still = append(still, p)
			}
		}
		waiting = still
		if len(waiting) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range waiting {
				errs = append(errs, fmt.Errorf("mlflowaccesstoken %s: the operator did not honour the %s request within %s (is it running? --timeout waits longer)%s",
					p.key, req.noun, timeout, lastFailure(ctx, c, p)))
			}
			break
		}
		select {
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		case <-time.After(500 * time.Millisecond):
		}
	}
	return errors.Join(errs...)
}

// transientReasons are failures the operator retries by itself with good chances; any other
// failure after a request needs a person, so waiting on is pointless.
var transientReasons = map[string]bool{
	authv1alpha1.ReasonKeycloakUnreachable: true, authv1alpha1.ReasonKeycloakTimeout: true,
	authv1alpha1.ReasonKeycloakError: true, "": true,
}

// check reports whether the operator has honoured p, or an error when it failed in a way only a
// person can fix.
func check(ctx context.Context, c client.Client, p *pending, req request, now time.Time, out io.Writer, display string) (bool, error) {
	obj := &authv1alpha1.MLflowAccessToken{}
	if err := c.Get(ctx, p.key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return false, fmt.Errorf("mlflowaccesstoken %s was deleted while waiting", p.key)
		}
		return false, err
	}
	s := obj.Status
	if req.honoured(s) == p.value && meta.IsStatusConditionTrue(s.Conditions, authv1alpha1.ConditionReady) {
		printf(out, "mlflowaccesstoken/%s: %s: new token in Secret %s, expires %s, next renewal %s\n", display, req.done,
			s.SecretName, whenShort(s.ExpiresAt, now), whenShort(s.RenewalTime, now))
		return true, nil
	}
	// A failed attempt since the last look: more attempts in a row, or a new failure time
	// (after a success in between, the count restarts).
	if s.FailedAttempts > 0 && (s.FailedAttempts != p.attempts || !s.LastFailureTime.Equal(p.failureAt)) {
		if s.FailedAttempts > p.attempts {
			p.failures += int(s.FailedAttempts - p.attempts)
		} else {
			p.failures++
		}
	}
	p.attempts, p.failureAt = s.FailedAttempts, s.LastFailureTime
	// One failure may come from an attempt that began before the request (it read the inputs
	// before they changed, e.g. before bootstrap wrote its token); a second one cannot.
	if cnd := meta.FindStatusCondition(s.Conditions, authv1alpha1.ConditionRenewalFailing); p.failures >= 2 &&
		cnd != nil && cnd.Status == metav1.ConditionTrue && !transientReasons[cnd.Reason] {
		return false, fmt.Errorf("mlflowaccesstoken %s: the operator acted on the %s request but could not obtain a new token: %s: %s",
			p.key, req.noun, cnd.Reason, cnd.Message)
	}
	return false, nil
}

func lastFailure(ctx context.Context, c client.Client, p *pending) string {
	obj := &authv1alpha1.MLflowAccessToken{}
	if c.Get(ctx, p.key, obj) != nil {
		return ""
	}
	if cnd := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionRenewalFailing); cnd != nil && cnd.Status == metav1.ConditionTrue {
		return fmt.Sprintf("; last failure: %s: %s", cnd.Reason, cnd.Message)
	}
	return ""
}

// name is the object's name, with its namespace when the objects span several.
func name(key types.NamespacedName, objs []*authv1alpha1.MLflowAccessToken) string {
	for _, o := range objs {
		if o.Namespace != key.Namespace {
			return key.Name + " (namespace " + key.Namespace + ")"
		}
	}
	return key.Name
}

// whenShort is "in 4m10s (2026-11-30T12:00:00Z)".
func whenShort(t *metav1.Time, now time.Time) string {
	if t == nil {
		return "<unknown>"
	}
	d := t.Sub(now)
	if d < 0 {
		return fmt.Sprintf("%s ago (%s)", duration.HumanDuration(-d), fmtTime(t.Time))
	}
	return fmt.Sprintf("in %s (%s)", duration.HumanDuration(d), fmtTime(t.Time))
}
