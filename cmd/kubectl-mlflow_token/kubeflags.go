package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeFlags are kubectl's connection flags: --kubeconfig, --context, --cluster, --user,
// -n/--namespace, --request-timeout, -s/--server, --token, --as, --as-group, --as-uid,
// --certificate-authority, --client-certificate, --client-key, --insecure-skip-tls-verify,
// --tls-server-name, --proxy-url, --disable-compression, --username, --password. They are bound
// with client-go's clientcmd, where kubectl's flags come from; the kubeconfig is loaded as kubectl
// loads it ($KUBECONFIG, ~/.kube/config, in-cluster).
//
// cli-runtime's genericclioptions.ConfigFlags wraps the same clientcmd flags. It is not used
// because its package also holds the resource builder's flags, which link kustomize and, through
// kustomize's plugin loader, Go's plugin package: that makes the linker keep every exported
// symbol, and the plugin grows from 41 MB to 73 MB for code it never runs. It offers the same
// two methods (ToRawKubeConfigLoader, ToRESTConfig), so swapping it in is a one-line change.
type kubeFlags struct {
	kubeconfig string
	overrides  clientcmd.ConfigOverrides

	once   sync.Once
	config clientcmd.ClientConfig
}

// AddFlags binds the flags; they are read when the first client is made, after parsing.
func (f *kubeFlags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "Path to the kubeconfig file to use for CLI requests.")
	names := clientcmd.RecommendedConfigOverrideFlags("")
	names.ClusterOverrideFlags.APIServer.ShortName = "s" // as kubectl
	clientcmd.BindOverrideFlags(&f.overrides, fs, names)
}

// ToRawKubeConfigLoader is the kubeconfig with the flags applied.
func (f *kubeFlags) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	f.once.Do(func() {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = f.kubeconfig
		f.config = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &f.overrides)
	})
	return f.config
}

// ToRESTConfig is the REST configuration of the selected context.
func (f *kubeFlags) ToRESTConfig() (*rest.Config, error) {
	cfg, err := f.ToRawKubeConfigLoader().ClientConfig()
	return cfg, f.explain(err)
}

// Namespace is -n, else the kubeconfig context's namespace, else "default".
func (f *kubeFlags) Namespace() (string, error) {
	ns, _, err := f.ToRawKubeConfigLoader().Namespace()
	return ns, f.explain(err)
}

// explain rewords client-go's error for a missing kubeconfig; other errors pass unchanged.
func (f *kubeFlags) explain(err error) error {
	if clientcmd.IsEmptyConfig(err) {
		return f.noKubeconfigError()
	}
	return err
}

// noKubeconfigError replaces client-go's "no configuration has been provided, try setting
// KUBERNETES_MASTER environment variable" with where the kubeconfig was looked for and how to
// name one. The hint is wrong here: only client-go's deprecated DefaultClientConfig reads that
// variable, not the loading rules kubectl and this plugin use (TestNoKubeconfig sets it). client-go reads $KUBECONFIG (a list of files)
// when it is set and ~/.kube/config only when it is not; missing files are skipped silently.
func (f *kubeFlags) noKubeconfigError() error {
	state := func(path string) string {
		if _, err := os.Stat(path); err != nil {
			return "does not exist"
		}
		return "defines no cluster"
	}
	var where string
	switch env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); {
	case f.kubeconfig != "":
		where = "--kubeconfig " + f.kubeconfig + " " + state(f.kubeconfig)
	case env != "":
		var files []string
		for _, p := range filepath.SplitList(env) {
			if p != "" {
				files = append(files, p+" ("+state(p)+")")
			}
		}
		where = "$KUBECONFIG names " + strings.Join(files, ", ") + ", and ~/.kube/config is read only when KUBECONFIG is unset"
	default:
		where = "$KUBECONFIG is not set and ~/.kube/config (" + clientcmd.RecommendedHomeFile + ") " + state(clientcmd.RecommendedHomeFile)
	}
	return fmt.Errorf("no kubeconfig found: %s; nor is this a pod in a cluster.\n"+
		"Point the plugin at a cluster as you would kubectl: --kubeconfig FILE, or export KUBECONFIG=FILE", where)
}

// outputFormats are the -o values handled by cli-runtime's printers (list adds wide and the table).
// go-template is left out on purpose: executing Go templates makes the linker keep every
// exported method of every type (text/template calls methods by name), 13 MB for a format that
// jsonpath covers.
var outputFormats = []string{"json", "yaml", "name", "jsonpath=TEMPLATE", "jsonpath-as-json=TEMPLATE", "jsonpath-file=FILE"}

// resourcePrinter is kubectl's -o for API objects, with kubectl's defaults: managedFields left
// out of json and yaml, missing keys allowed in jsonpath templates.
func resourcePrinter(format string) (printers.ResourcePrinter, error) {
	kind, arg, hasArg := strings.Cut(format, "=")
	template := func() (string, error) {
		if !hasArg || arg == "" {
			return "", usagef("-o %s needs a template: -o %s=...", kind, kind)
		}
		if strings.HasSuffix(kind, "-file") {
			b, err := os.ReadFile(arg)
			if err != nil {
				return "", usagef("reading the template: %v", err)
			}
			return string(b), nil
		}
		return arg, nil
	}
	switch kind {
	case "json":
		return &printers.OmitManagedFieldsPrinter{Delegate: &printers.JSONPrinter{}}, nil
	case "yaml":
		return &printers.OmitManagedFieldsPrinter{Delegate: &printers.YAMLPrinter{}}, nil
	case "name":
		return &printers.NamePrinter{}, nil
	case "jsonpath", "jsonpath-as-json", "jsonpath-file":
		t, err := template()
		if err != nil {
			return nil, err
		}
		p, err := printers.NewJSONPathPrinter(t)
		if err != nil {
			return nil, usagef("invalid jsonpath template: %v", err)
		}
		p.AllowMissingKeys(true)
		p.EnableJSONOutput(kind == "jsonpath-as-json")
		return p, nil
	}
	return nil, usagef("unknown output format %q: use one of %s", format, strings.Join(outputFormats, ", "))
}
