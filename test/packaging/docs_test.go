package packaging

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// constants returns the string constants of api/v1alpha1/conditions*.go and of
// mlflowaccesstoken_delivery.go (the delivery's conditions and reasons) whose names start with
// prefix (read from the source, so that a reason added there without docs fails here).
func constants(t *testing.T, prefix string) map[string]string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "api", "v1alpha1")
	files, err := filepath.Glob(filepath.Join(dir, "conditions*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no api/v1alpha1/conditions*.go: %v", err)
	}
	files = append(files, filepath.Join(dir, "mlflowaccesstoken_delivery.go"))
	out := map[string]string{}
	for _, file := range files {
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		collect(f, prefix, out)
	}
	if len(out) == 0 {
		t.Fatalf("no %s* constants in api/v1alpha1/conditions*.go", prefix)
	}
	return out
}

func collect(f *ast.File, prefix string, out map[string]string) {
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if !strings.HasPrefix(name.Name, prefix) || i >= len(vs.Values) {
				continue
			}
			if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				v, _ := strconv.Unquote(lit.Value)
				out[name.Name] = v
			}
		}
		return true
	})
}

// TestTroubleshootingCoversEveryReason: every condition type and reason of
// api/v1alpha1/conditions*.go has an entry in docs/troubleshooting.md, and the errors people know
// from getting tokens by hand (curl to Keycloak, MLFLOW_TRACKING_TOKEN) are answered there.
func TestTroubleshootingCoversEveryReason(t *testing.T) {
	doc := string(mustRead(t, "docs/troubleshooting.md"))
	for _, prefix := range []string{"Reason", "Condition"} {
		for name, v := range constants(t, prefix) {
			if !strings.Contains(doc, "`"+v+"`") {
				t.Errorf("%s (%q) is not documented in docs/troubleshooting.md", name, v)
			}
		}
	}
	for _, manual := range []string{"Invalid token", "Unauthorized", "Bearer", "group membership", "OIDC_CLIENT_ID", "expired"} {
		if !strings.Contains(doc, manual) {
			t.Errorf("docs/troubleshooting.md does not answer the manual procedure's error %q", manual)
		}
	}
}
