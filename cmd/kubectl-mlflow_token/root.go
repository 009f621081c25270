package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// Exit codes. Scripts may rely on them; they are listed in the root command's help and in the
// README.
const (
	exitOK = 0
	// exitError: anything else went wrong (API server unreachable, forbidden, the operator did
	// not act in time, Keycloak refused, the login was denied or expired).
	exitError = 1
	// exitUsage: unknown command or flag, wrong arguments.
	exitUsage = 2
	// exitNotFound: a named MLflowAccessToken does not exist.
	exitNotFound = 3
	// exitNotReady: inspect --require-ready on a token that is not Ready.
	exitNotReady = 4
)

const exitCodesHelp = `Exit codes:
  0  success
  1  error (API server unreachable, forbidden, the operator did not act in time,
     Keycloak refused, the login was denied or expired)
  2  usage error (unknown command or flag, wrong arguments)
  3  a named MLflowAccessToken was not found
  4  inspect --require-ready: the token is not Ready`

// displayName is how people type the plugin; the binary is kubectl-mlflow_token.
const displayName = "kubectl mlflow-token"

// usageError marks errors in how the command was called (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// notReadyError is inspect --require-ready's verdict (exit 4).
type notReadyError struct{ msg string }

func (e notReadyError) Error() string { return e.msg }

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	var ue usageError
	var nr notReadyError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &nr):
		return exitNotReady
	case allNotFound(err):
		return exitNotFound
	default:
		return exitError
	}
}

// allNotFound: err (or every error joined in it) says that a named resource does not exist.
func allNotFound(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		for _, e := range errs {
			if !allNotFound(e) {
				return false
			}
		}
		return len(errs) > 0
	}
	var nf notFoundError
	return errors.As(err, &nf)
}

// notFoundError: a named MLflowAccessToken does not exist (exit 3).
type notFoundError struct{ ns, name string }

func (e notFoundError) Error() string {
	return fmt.Sprintf("mlflowaccesstoken %q not found in namespace %q", e.name, e.ns)
}

// rootOptions is what every subcommand shares: kubectl's connection flags and the streams.
type rootOptions struct {
	configFlags *kubeFlags
	streams     genericiooptions.IOStreams
	now         func() time.Time
}

// run executes the plugin with args and returns the exit code.
func run(ctx context.Context, args []string, streams genericiooptions.IOStreams) int {
	cmd := newRootCommand(streams, time.Now)
	cmd.SetArgs(args)
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	executed, err := cmd.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	fmt.Fprintln(streams.ErrOut, "error:", err)
	if code == exitUsage {
		path := displayName
		if executed != nil {
			path = executed.CommandPath() // with the display name: "kubectl mlflow-token renew"
		}
		fmt.Fprintf(streams.ErrOut, "See '%s --help' for usage.\n", path)
	}
	return code
}

func newRootCommand(streams genericiooptions.IOStreams, now func() time.Time) *cobra.Command {
	o := &rootOptions{configFlags: &kubeFlags{}, streams: streams, now: now}
	cmd := &cobra.Command{
		Use:   "kubectl-mlflow_token",
		Short: "Work with MLflowAccessTokens: list, inspect, renew, revoke, bootstrap",
		Long: `Work with the MLflowAccessTokens of the mlflow-token-operator.

The plugin talks to the API server as kubectl does (the same kubeconfig and flags) and, for
bootstrap only, to Keycloak. It never prints a token, refresh token, password or client secret.

` + exitCodesHelp,
		Example: `  kubectl mlflow-token list -A
  kubectl mlflow-token inspect training-token --require-ready
  kubectl mlflow-token renew training-token
  kubectl mlflow-token bootstrap alice-token`,
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: displayName},
		// With Args set, cobra does not report an unknown subcommand itself (its error would be
		// indistinguishable from a runtime failure): this does, as a usage error.
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], displayName)
			if s := c.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
			}
			return usageError{errors.New(msg)}
		},
		RunE:                       func(c *cobra.Command, _ []string) error { return c.Help() },
		SilenceErrors:              true,
		SilenceUsage:               true,
		SuggestionsMinimumDistance: 2,
	}
	o.configFlags.AddFlags(cmd.PersistentFlags())
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	registerConfigFlagCompletions(cmd, o)

	cmd.AddCommand(newListCommand(o), newInspectCommand(o), newRenewCommand(o), newRevokeCommand(o),
		newBootstrapCommand(o), newVersionCommand(o), newPodsCommand(o))
	return cmd
}

// exactArgs is cobra.ExactArgs as a usage error, naming what is expected.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("expected %s, got %d argument(s)", what, len(args))
		}
		return nil
	}
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument(s) %q", args)
	}
	return nil
}

// client returns an API client for the flags' kubeconfig and context. The REST mapping of the
// few kinds the plugin uses is static: no discovery round trips, and no discovery cache on disk.
func (o *rootOptions) client() (client.Client, error) {
	cfg, err := o.configFlags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "kubectl-mlflow_token/" + version
	return client.New(cfg, client.Options{Scheme: scheme.New(), Mapper: restMapper()})
}

func restMapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	m.Add(authv1alpha1.GroupVersion.WithKind("MLflowAccessToken"), meta.RESTScopeNamespace)
	m.Add(corev1.SchemeGroupVersion.WithKind("Secret"), meta.RESTScopeNamespace)
	m.Add(corev1.SchemeGroupVersion.WithKind("ConfigMap"), meta.RESTScopeNamespace)
	m.Add(corev1.SchemeGroupVersion.WithKind("Namespace"), meta.RESTScopeRoot)
	m.Add(appsv1.SchemeGroupVersion.WithKind("Deployment"), meta.RESTScopeNamespace)
	m.Add(corev1.SchemeGroupVersion.WithKind("Pod"), meta.RESTScopeNamespace)
	m.Add(corev1.SchemeGroupVersion.WithKind("ServiceAccount"), meta.RESTScopeNamespace)
	m.Add(eventsv1.SchemeGroupVersion.WithKind("Event"), meta.RESTScopeNamespace)
	m.Add(authv1alpha1.GroupVersion.WithKind(authv1alpha1.KindKeycloakIssuer), meta.RESTScopeNamespace)
	m.Add(authv1alpha1.GroupVersion.WithKind(authv1alpha1.KindClusterKeycloakIssuer), meta.RESTScopeRoot)
	return m
}

// namespace is -n, else the kubeconfig context's namespace, else "default".
func (o *rootOptions) namespace() (string, error) {
	return o.configFlags.Namespace()
}

// connect returns the namespace (namespace()) and an API client (client()): what every
// subcommand that talks to the API server starts with.
func (o *rootOptions) connect() (string, client.Client, error) {
	ns, err := o.namespace()
	if err != nil {
		return "", nil, err
	}
	c, err := o.client()
	return ns, c, err
}

// parseSelector parses -l (nil for none); a bad selector is a usage error (exit 2).
func parseSelector(selector string) (labels.Selector, error) {
	if selector == "" {
		return nil, nil
	}
	s, err := labels.Parse(selector)
	if err != nil {
		return nil, usagef("invalid selector %q: %v", selector, err)
	}
	return s, nil
}

// getToken reads one MLflowAccessToken; a missing one is a notFoundError (exit 3).
func getToken(ctx context.Context, c client.Reader, ns, name string) (*authv1alpha1.MLflowAccessToken, error) {
	obj := &authv1alpha1.MLflowAccessToken{}
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
	if err != nil {
		return nil, apiError(err, ns, name)
	}
	return obj, nil
}

// apiError turns the API server's answers about MLflowAccessTokens into messages a person can
// act on.
func apiError(err error, ns, name string) error {
	switch {
	case apierrors.IsNotFound(err) && name != "" && isObjectNotFound(err):
		return notFoundError{ns: ns, name: name}
	case apierrors.IsNotFound(err), meta.IsNoMatchError(err):
		return fmt.Errorf("the API server does not serve MLflowAccessTokens (is the mlflow-token-operator's CRD installed?): %w", err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("forbidden: %w", err)
	}
	return err
}

// isObjectNotFound: the 404 names an object (rather than a missing resource type).
func isObjectNotFound(err error) bool {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		d := se.Status().Details
		return d != nil && d.Name != ""
	}
	return false
}

// completeTokenNames completes NAME arguments with the MLflowAccessTokens of the namespace.
func completeTokenNames(o *rootOptions) cobra.CompletionFunc {
	return func(c *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		cl, err := o.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ns, err := o.namespace()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		list := &authv1alpha1.MLflowAccessTokenList{}
		ctx, cancel := context.WithTimeout(c.Context(), 5*time.Second)
		defer cancel()
		if err := cl.List(ctx, list, client.InNamespace(ns)); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []cobra.Completion
		for _, it := range list.Items {
			if strings.HasPrefix(it.Name, toComplete) {
				names = append(names, it.Name)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// registerConfigFlagCompletions completes --context, --cluster and --user from the kubeconfig
// and --namespace from the API server.
func registerConfigFlagCompletions(cmd *cobra.Command, o *rootOptions) {
	fromKubeconfig := func(pick func(name string) bool, names func() []string) cobra.CompletionFunc {
		return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
			var out []cobra.Completion
			for _, n := range names() {
				if pick(n) {
					out = append(out, n)
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		}
	}
	raw := func(f func(cfg rawConfig) []string) func() []string {
		return func() []string {
			cfg, err := o.configFlags.ToRawKubeConfigLoader().RawConfig()
			if err != nil {
				return nil
			}
			return f(rawConfig{contexts: keys(cfg.Contexts), clusters: keys(cfg.Clusters), users: keys(cfg.AuthInfos)})
		}
	}
	all := func(string) bool { return true }
	_ = cmd.RegisterFlagCompletionFunc("context", fromKubeconfig(all, raw(func(c rawConfig) []string { return c.contexts })))
	_ = cmd.RegisterFlagCompletionFunc("cluster", fromKubeconfig(all, raw(func(c rawConfig) []string { return c.clusters })))
	_ = cmd.RegisterFlagCompletionFunc("user", fromKubeconfig(all, raw(func(c rawConfig) []string { return c.users })))
	_ = cmd.RegisterFlagCompletionFunc("namespace", func(c *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		cl, err := o.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(c.Context(), 5*time.Second)
		defer cancel()
		list := &corev1.NamespaceList{}
		if err := cl.List(ctx, list); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, n := range list.Items {
			if strings.HasPrefix(n.Name, toComplete) {
				out = append(out, n.Name)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
}

type rawConfig struct{ contexts, clusters, users []string }

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// printf writes to w, ignoring errors (the terminal is gone: nothing to tell).
func printf(w io.Writer, format string, a ...any) { _, _ = fmt.Fprintf(w, format, a...) }
