package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

type listOptions struct {
	*rootOptions
	allNamespaces bool
	selector      string
	noHeaders     bool
	showLabels    bool
	output        string
}

func newListCommand(root *rootOptions) *cobra.Command {
	o := &listOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List MLflowAccessTokens with their state and countdowns",
		Long: `List MLflowAccessTokens: whether each is Ready and why, its Secret, when its token
expires and when the operator renews it next (countdowns), and its age.

Columns: NAME, READY, REASON, SECRET, EXPIRES, NEXT RENEWAL, AGE; -A adds NAMESPACE;
-o wide adds ROTATIONS, EXPIRES AT, RENEWAL AT (RFC 3339) and MESSAGE.
-o json|yaml print the resources as the API server has them (a list); -o name their names.

` + exitCodesHelp,
		Example: `  kubectl mlflow-token list
  kubectl mlflow-token list -A -l team=a -o wide
  kubectl mlflow-token list -o jsonpath='{.items[*].status.expiresAt}'`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error { return o.run(c) },
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "List the tokens of all namespaces.")
	cmd.Flags().StringVarP(&o.selector, "selector", "l", "", "Label selector, e.g. -l team=a,env!=prod.")
	cmd.Flags().BoolVar(&o.noHeaders, "no-headers", false, "Table output: no header line.")
	cmd.Flags().BoolVar(&o.showLabels, "show-labels", false, "Table output: add a LABELS column.")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "Output format: wide, "+strings.Join(outputFormats, ", ")+" (default: a table).")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"wide", "json", "yaml", "name", "jsonpath=", "jsonpath-as-json=", "jsonpath-file="}, cobra.ShellCompDirectiveNoFileComp|cobra.ShellCompDirectiveNoSpace))
	return cmd
}

func (o *listOptions) run(cmd *cobra.Command) error {
	format := o.output
	var printer printers.ResourcePrinter
	switch format {
	case "", "wide":
		printer = printers.NewTablePrinter(printers.PrintOptions{
			Wide: format == "wide", WithNamespace: o.allNamespaces, NoHeaders: o.noHeaders, ShowLabels: o.showLabels,
		})
	default:
		p, err := resourcePrinter(format)
		if err != nil {
			return fmt.Errorf("%w (or wide, or no -o for the table)", err)
		}
		printer = p
	}
	sel, err := parseSelector(o.selector)
	if err != nil {
		return err
	}
	ns, c, err := o.connect()
	if err != nil {
		return err
	}
	var opts []client.ListOption
	if !o.allNamespaces {
		opts = append(opts, client.InNamespace(ns))
	}
	if sel != nil {
		opts = append(opts, client.MatchingLabelsSelector{Selector: sel})
	}
	list := &authv1alpha1.MLflowAccessTokenList{}
	if err := c.List(cmd.Context(), list, opts...); err != nil {
		return apiError(err, ns, "")
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	if format == "" || format == "wide" {
		if len(list.Items) == 0 {
			if o.allNamespaces {
				printf(o.streams.ErrOut, "No MLflowAccessTokens found.\n")
			} else {
				printf(o.streams.ErrOut, "No MLflowAccessTokens found in namespace %s.\n", ns)
			}
			return nil
		}
		return printer.PrintObj(tokenTable(list.Items, o.now()), o.streams.Out)
	}
	// The typed client leaves kinds empty; printers (and scripts reading the JSON) need them.
	list.SetGroupVersionKind(authv1alpha1.GroupVersion.WithKind("MLflowAccessTokenList"))
	for i := range list.Items {
		list.Items[i].SetGroupVersionKind(authv1alpha1.GroupVersion.WithKind("MLflowAccessToken"))
	}
	if format == "name" {
		// cli-runtime's name printer takes objects, not lists (kubectl get flattens them too).
		for i := range list.Items {
			if err := printer.PrintObj(&list.Items[i], o.streams.Out); err != nil {
				return err
			}
		}
		return nil
	}
	return printer.PrintObj(list, o.streams.Out)
}

// tokenTable is the table of list; priority-1 columns show with -o wide only.
func tokenTable(items []authv1alpha1.MLflowAccessToken, now time.Time) *metav1.Table {
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name"},
		{Name: "Ready", Type: "string"},
		{Name: "Reason", Type: "string"},
		{Name: "Secret", Type: "string"},
		{Name: "Expires", Type: "string", Description: "When the token in the Secret expires, from now."},
		{Name: "Next Renewal", Type: "string", Description: "When the operator renews the token next, from now."},
		{Name: "Age", Type: "string"},
		{Name: "Rotations", Type: "integer", Priority: 1},
		{Name: "Expires At", Type: "string", Format: "date-time", Priority: 1},
		{Name: "Renewal At", Type: "string", Format: "date-time", Priority: 1},
		{Name: "Message", Type: "string", Priority: 1},
	}}
	for i := range items {
		obj := &items[i]
		s := obj.Status
		ready, reason, message := "Unknown", "", ""
		if c := meta.FindStatusCondition(s.Conditions, authv1alpha1.ConditionReady); c != nil {
			ready, reason, message = string(c.Status), c.Reason, c.Message
		}
		t.Rows = append(t.Rows, metav1.TableRow{
			Cells: []any{
				obj.Name, ready, orNone(reason), orNone(s.SecretName),
				until(s.ExpiresAt, now, "expired"), until(s.RenewalTime, now, "due"),
				duration.HumanDuration(now.Sub(obj.CreationTimestamp.Time)),
				s.Rotations, absTime(s.ExpiresAt), absTime(s.RenewalTime), orNone(message),
			},
			Object: runtime.RawExtension{Object: obj},
		})
	}
	return t
}

// until is a countdown in kubectl's AGE style: "in 4m10s", or "<past> 3m ago" once passed.
func until(t *metav1.Time, now time.Time, past string) string {
	if t == nil {
		return "<none>"
	}
	d := t.Sub(now)
	if d < 0 {
		return fmt.Sprintf("%s %s ago", past, duration.HumanDuration(-d))
	}
	return "in " + duration.HumanDuration(d)
}

func absTime(t *metav1.Time) string {
	if t == nil {
		return "<none>"
	}
	return fmtTime(t.Time)
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
