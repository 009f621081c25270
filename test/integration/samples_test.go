package integration

import (
	"context"
	"os"
	"path/filepath"
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
