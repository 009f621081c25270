package packaging

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// `kubectl explain mlflowaccesstokens.spec...` shows each field's description: every field of
// the generated schema must have one.
func TestEveryFieldIsExplained(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", "auth.mlflow-token-operator.io_mlflowaccesstokens.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(raw, crd); err != nil {
		t.Fatal(err)
	}
	var missing []string
	fields := 0
	var walk func(path string, s apiextensionsv1.JSONSchemaProps)
	walk = func(path string, s apiextensionsv1.JSONSchemaProps) {
		for name, p := range s.Properties {
			child := path + "." + name
			if child == ".apiVersion" || child == ".kind" || child == ".metadata" {
				continue
			}
			fields++
			if p.Description == "" {
				missing = append(missing, child)
			}
			walk(child, p)
		}
		if s.Items != nil && s.Items.Schema != nil {
			walk(path+"[]", *s.Items.Schema)
		}
	}
	n := 0
	for _, v := range crd.Spec.Versions {
		walk("", *v.Schema.OpenAPIV3Schema)
		n++
	}
	if n == 0 {
		t.Fatal("no versions in the CRD")
	}
	if fields < 50 {
		t.Fatalf("only %d fields walked: the schema walk is broken", fields)
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("field %s has no description (kubectl explain would show nothing)", m)
	}
}
