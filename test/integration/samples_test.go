package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// The samples in config/samples are what users copy: each is accepted by the API server as it
// stands (schema, CEL rules, strict field validation), in a dry run, so the operator never acts on
// them (they name example.com hosts).
func TestSamplesAreValid(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "auth_*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("samples: %v %v", files, err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		o := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(raw, &o.Object); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if o.GetKind() == "MLflowAccessToken" || o.GetKind() == "KeycloakIssuer" {
			o.SetNamespace(ns)
		}
		if err := k8s.Create(context.Background(), o, client.DryRunAll, client.FieldValidation("Strict")); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}
}

// The resources the docs show in full (README.md and docs/*.md, YAML blocks with our API group)
// are accepted as they stand, in a dry run: a user who copies one gets no admission error.
func TestDocsResourcesAreValid(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	files, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(), "docs", "*.md"))
	files = append(files, filepath.Join(testenv.RepoRoot(), "README.md"))
	checked := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, block := range yamlBlocks(string(raw)) {
			for _, doc := range strings.Split(block, "\n---\n") {
				o := &unstructured.Unstructured{}
				if yaml.Unmarshal([]byte(doc), &o.Object) != nil || !strings.HasPrefix(o.GetAPIVersion(), "auth.mlflow-token-operator.io/") {
					continue
				}
				if o.GetKind() != "ClusterKeycloakIssuer" {
					o.SetNamespace(ns)
				}
				checked++
				if err := k8s.Create(context.Background(), o, client.DryRunAll, client.FieldValidation("Strict")); err != nil {
					t.Errorf("%s: %s %s: %v", filepath.Base(f), o.GetKind(), o.GetName(), err)
				}
			}
		}
	}
	if checked < 4 {
		t.Fatalf("only %d resources found in the docs: the scanner no longer finds them", checked)
	}
	t.Logf("%d resources of the docs accepted by the API server", checked)
}

// yamlBlocks returns the contents of the ```yaml fenced blocks of a Markdown text.
func yamlBlocks(md string) []string {
	var out []string
	for _, part := range strings.Split(md, "```yaml\n")[1:] {
		if end := strings.Index(part, "```"); end >= 0 {
			out = append(out, part[:end])
		}
	}
	return out
}
