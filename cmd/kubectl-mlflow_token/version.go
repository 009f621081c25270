package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// version is the plugin's release; release builds set it with
// -ldflags "-X main.version=v$(cat VERSION)".
var version = "v0.2.0-alpha.0"

// operatorSelector finds the operator's Deployment (the chart and config/manager label it so).
const operatorSelector = "app.kubernetes.io/name=mlflow-token-operator"

type versionOptions struct {
	*rootOptions
	clientOnly bool
	output     string
}

type versionInfo struct {
	Plugin   pluginVersion    `json:"plugin"`
	Operator *operatorVersion `json:"operator,omitempty"`
}

type pluginVersion struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

type operatorVersion struct {
	// Versions are the versions found, one per Deployment ("namespace/name": version).
	Versions map[string]string `json:"versions,omitempty"`
	// Unknown says why no version was found.
	Unknown string `json:"unknown,omitempty"`
}

func newVersionCommand(root *rootOptions) *cobra.Command {
	o := &versionOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version, and the operator's when it can be found",
		Long: `Print the plugin's version and, unless --client, the operator's: the version label (or image
tag) of the Deployments labelled ` + operatorSelector + `, looked up in all namespaces with
one request. Without list on Deployments the operator's version is reported as unknown.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error { return o.run(c.Context()) },
	}
	cmd.Flags().BoolVar(&o.clientOnly, "client", false, "Print the plugin's version only (no API server request).")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "Output format: json or yaml (default: text).")
	return cmd
}

func (o *versionOptions) run(ctx context.Context) error {
	if o.output != "" && o.output != "json" && o.output != "yaml" {
		return usagef("unknown output format %q: use json or yaml", o.output)
	}
	info := versionInfo{Plugin: pluginVersion{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" && modified == "true" {
			rev += "-dirty"
		}
		info.Plugin.Commit = rev
	}
	if !o.clientOnly {
		info.Operator = o.operatorVersion(ctx)
	}
	switch o.output {
	case "json":
		b, _ := json.MarshalIndent(info, "", "  ")
		printf(o.streams.Out, "%s\n", b)
		return nil
	case "yaml":
		b, _ := yaml.Marshal(info)
		printf(o.streams.Out, "%s", b)
		return nil
	}
	p := info.Plugin
	extra := p.GoVersion + ", " + p.Platform
	if p.Commit != "" {
		extra = "commit " + p.Commit + ", " + extra
	}
	printf(o.streams.Out, "Plugin version: %s (%s)\n", p.Version, extra)
	if op := info.Operator; op != nil {
		if op.Unknown != "" {
			printf(o.streams.Out, "Operator version: unknown (%s)\n", op.Unknown)
		}
		for _, k := range sortedKeys(op.Versions) {
			printf(o.streams.Out, "Operator version: %s (Deployment %s)\n", op.Versions[k], k)
		}
	}
	return nil
}

// operatorVersion looks for the operator's Deployments; any failure is reported, not returned:
// the plugin's version is printed either way.
func (o *versionOptions) operatorVersion(ctx context.Context) *operatorVersion {
	c, err := o.client()
	if err != nil {
		return &operatorVersion{Unknown: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list := &appsv1.DeploymentList{}
	if err := c.List(ctx, list, client.MatchingLabels{"app.kubernetes.io/name": "mlflow-token-operator"}); err != nil {
		if apierrors.IsForbidden(err) {
			return &operatorVersion{Unknown: "you may not list Deployments in all namespaces"}
		}
		return &operatorVersion{Unknown: err.Error()}
	}
	if len(list.Items) == 0 {
		return &operatorVersion{Unknown: "no Deployment labelled " + operatorSelector}
	}
	ov := &operatorVersion{Versions: map[string]string{}}
	for _, d := range list.Items {
		v := d.Labels["app.kubernetes.io/version"]
		if v == "" {
			v = imageTag(d)
		}
		if v == "" {
			v = "unknown"
		}
		ov.Versions[d.Namespace+"/"+d.Name] = v
	}
	return ov
}

// imageTag is the tag (or digest) of the operator's container image.
func imageTag(d appsv1.Deployment) string {
	cs := d.Spec.Template.Spec.Containers
	for i, c := range cs {
		if c.Name == "manager" || i == len(cs)-1 {
			img := c.Image
			if at := strings.LastIndex(img, "@"); at >= 0 {
				return img[at+1:]
			}
			if colon := strings.LastIndex(img, ":"); colon > strings.LastIndex(img, "/") {
				return img[colon+1:]
			}
			return fmt.Sprintf("%s (no tag)", img)
		}
	}
	return ""
}
