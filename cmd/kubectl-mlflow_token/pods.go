package main

import (
	"sort"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// defaultCSIDriver is the CSI driver's default name (internal/csinode.DefaultDriverName; not
// imported: the plugin links no operator code).
const defaultCSIDriver = "csi.mlflow-token-operator.io"

type podsOptions struct {
	*rootOptions
	allNamespaces bool
	node          string
	driver        string
	noHeaders     bool
}

// newPodsCommand lists the pods that hold per-pod tokens of the CSI driver. Everything it shows
// comes from the pods' specs: a token itself, its expiry and its rotations live only on the pod's
// node (in the node plugin), never in the API server, so they are not shown here; the plugin's
// metrics give them per issuer and namespace.
func newPodsCommand(root *rootOptions) *cobra.Command {
	o := &podsOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "pods",
		Short: "List the pods that get per-pod tokens from the CSI driver",
		Long: `List the pods that get a token of their own from the CSI driver (an inline volume of
csi.mlflow-token-operator.io): their node, their ServiceAccount (the identity their token is minted
with), the issuer and client their volume names, and their phase.

The tokens themselves, their expiry and rotations live only on the pods' nodes: they are not in the
API server, so this command cannot show them (the node plugin's metrics do, per issuer and
namespace). A pod stuck in Pending with such a volume: kubectl describe pod shows why its mount failed.

Columns: NAME, NODE, SERVICE ACCOUNT, ISSUER, CLIENT, PHASE, AGE; -A adds NAMESPACE.

` + exitCodesHelp,
		Example: `  kubectl mlflow-token pods
  kubectl mlflow-token pods -A --node worker-1`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error { return o.run(c) },
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "List the pods of all namespaces.")
	cmd.Flags().StringVar(&o.node, "node", "", "Only the pods of this node.")
	cmd.Flags().StringVar(&o.driver, "driver", defaultCSIDriver, "The CSI driver's name (the chart's csiDriver.name).")
	cmd.Flags().BoolVar(&o.noHeaders, "no-headers", false, "No header line.")
	return cmd
}

func (o *podsOptions) run(cmd *cobra.Command) error {
	ns, c, err := o.connect()
	if err != nil {
		return err
	}
	var opts []client.ListOption
	if !o.allNamespaces {
		opts = append(opts, client.InNamespace(ns))
	}
	if o.node != "" {
		opts = append(opts, client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("spec.nodeName", o.node)})
	}
	list := &corev1.PodList{}
	if err := c.List(cmd.Context(), list, opts...); err != nil {
		return apiError(err, ns, "")
	}
	t := csiPodTable(list.Items, o.driver, o.now())
	if len(t.Rows) == 0 {
		printf(o.streams.ErrOut, "No pods with a volume of %s found.\n", o.driver)
		return nil
	}
	p := printers.NewTablePrinter(printers.PrintOptions{WithNamespace: o.allNamespaces, NoHeaders: o.noHeaders})
	return p.PrintObj(t, o.streams.Out)
}

// csiPodTable has a row per pod and volume of driver, sorted by namespace and name.
func csiPodTable(pods []corev1.Pod, driver string, now time.Time) *metav1.Table {
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name"},
		{Name: "Node", Type: "string"},
		{Name: "Service Account", Type: "string", Description: "The identity the pod's token is minted with."},
		{Name: "Issuer", Type: "string"},
		{Name: "Client", Type: "string"},
		{Name: "Phase", Type: "string"},
		{Name: "Age", Type: "string"},
	}}
	sort.Slice(pods, func(i, j int) bool {
		if pods[i].Namespace != pods[j].Namespace {
			return pods[i].Namespace < pods[j].Namespace
		}
		return pods[i].Name < pods[j].Name
	})
	for i := range pods {
		p := &pods[i]
		for _, v := range p.Spec.Volumes {
			if v.CSI == nil || v.CSI.Driver != driver {
				continue
			}
			a := v.CSI.VolumeAttributes
			sa := p.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			t.Rows = append(t.Rows, metav1.TableRow{
				Cells: []any{p.Name, orNone(p.Spec.NodeName), sa, orNone(a["issuerRef"]), orNone(a["clientID"]), string(p.Status.Phase),
					duration.HumanDuration(now.Sub(p.CreationTimestamp.Time))},
				Object: runtime.RawExtension{Object: p},
			})
		}
	}
	return t
}
