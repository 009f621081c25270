package packaging

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// docs/reference.md is the page users look things up in. Its tables are checked against the code
// they describe, so that a new metric, label or condition cannot go undocumented and a label
// cannot be misdocumented:
//
//   - the metrics table lists every metric internal/metrics defines, with its type and exactly
//     its labels (read from the Go source: the Name of each prometheus.*Opts and the label list
//     beside it);
//   - the conditions table has a row for every condition type of the API (api/v1alpha1).
//
// (TestDocsFlags checks its flags table; TestTroubleshootingCoversEveryReason the reasons.)

const referenceDoc = "docs/reference.md"

// metricDef is one metric as internal/metrics defines it.
type metricDef struct {
	name, kind string // kind: counter, gauge, histogram
	labels     []string
}

// definedMetrics reads internal/metrics: every call of prometheus.New{Counter,Gauge,Histogram}[Vec]
// with the Name of its options and, for the Vec forms, its label names.
func definedMetrics(t *testing.T) []metricDef {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "internal", "metrics", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	var parsed []*ast.File
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, af)
		for _, d := range af.Decls {
			if gd, ok := d.(*ast.GenDecl); ok && gd.Tok == token.CONST {
				for _, sp := range gd.Specs {
					vs := sp.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if i < len(vs.Values) {
							if bl, ok := vs.Values[i].(*ast.BasicLit); ok && bl.Kind == token.STRING {
								consts[n.Name], _ = strconv.Unquote(bl.Value)
							}
						}
					}
				}
			}
		}
	}
	str := func(e ast.Expr) string {
		switch v := e.(type) {
		case *ast.BasicLit:
			s, _ := strconv.Unquote(v.Value)
			return s
		case *ast.Ident:
			if s, ok := consts[v.Name]; ok {
				return s
			}
		}
		t.Fatalf("internal/metrics: %s is neither a string literal nor a string constant of the package", fset.Position(e.Pos()))
		return ""
	}
	ctor := regexp.MustCompile(`^New(Counter|Gauge|Histogram)(Vec)?$`)
	var out []metricDef
	for _, af := range parsed {
		ast.Inspect(af, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "prometheus" {
				return true
			}
			m := ctor.FindStringSubmatch(sel.Sel.Name)
			if m == nil || len(call.Args) == 0 {
				return true
			}
			def := metricDef{kind: strings.ToLower(m[1])}
			opts, ok := call.Args[0].(*ast.CompositeLit)
			if !ok {
				t.Fatalf("%s: options are not a composite literal", fset.Position(call.Pos()))
			}
			for _, el := range opts.Elts {
				if kv, ok := el.(*ast.KeyValueExpr); ok && kv.Key.(*ast.Ident).Name == "Name" {
					def.name = str(kv.Value)
				}
			}
			if m[2] == "Vec" {
				labels, ok := call.Args[1].(*ast.CompositeLit)
				if !ok {
					t.Fatalf("%s: labels are not a literal list", fset.Position(call.Pos()))
				}
				for _, l := range labels.Elts {
					def.labels = append(def.labels, str(l))
				}
			}
			if def.name == "" {
				t.Fatalf("%s: a metric without a Name", fset.Position(call.Pos()))
			}
			out = append(out, def)
			return true
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// tableRows returns the rows of the Markdown tables of a document whose first cell is a code
// span, keyed by that span: the remaining cells, trimmed.
func tableRows(f *docFile) map[string][]string {
	rows := map[string][]string{}
	for i, l := range f.lines {
		if f.code[i] || !strings.HasPrefix(l, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), " | ")
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		rows[strings.Trim(cells[0], "`")] = cells[1:]
	}
	return rows
}

func referenceFile(t *testing.T) *docFile {
	t.Helper()
	for _, f := range docFiles(t) {
		if f.rel == referenceDoc {
			return f
		}
	}
	t.Fatalf("%s not found", referenceDoc)
	return nil
}

func TestReferenceMetrics(t *testing.T) {
	defs := definedMetrics(t)
	if len(defs) < 20 {
		t.Fatalf("only %d metrics found in internal/metrics: the reader no longer finds them", len(defs))
	}
	rows := tableRows(referenceFile(t))
	for _, d := range defs {
		want := "—"
		if len(d.labels) > 0 {
			want = "`" + strings.Join(d.labels, "`, `") + "`"
		}
		row, ok := rows[d.name]
		switch {
		case !ok:
			t.Errorf("%s: the metrics table has no row for %s; add: | `%s` | %s | %s | … |", referenceDoc, d.name, d.name, d.kind, want)
		case len(row) < 3 || row[0] != d.kind || row[1] != want:
			t.Errorf("%s: %s is a %s with labels %s; the table says %v", referenceDoc, d.name, d.kind, want, row)
		}
	}
	// A row for a metric that does not exist is as wrong as a missing one.
	defined := map[string]bool{}
	for _, d := range defs {
		defined[d.name] = true
	}
	for name := range rows {
		if strings.HasPrefix(name, "mlflow_token_") && !defined[name] {
			t.Errorf("%s: the metrics table lists %s, which internal/metrics does not define", referenceDoc, name)
		}
	}
}

func TestReferenceConditions(t *testing.T) {
	fset := token.NewFileSet()
	files, _ := filepath.Glob(filepath.Join(repoRoot(t), "api", "v1alpha1", "*.go"))
	var types []string
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "zz_") || strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for name, obj := range af.Scope.Objects {
			if obj.Kind != ast.Con || !strings.HasPrefix(name, "Condition") {
				continue
			}
			if vs, ok := obj.Decl.(*ast.ValueSpec); ok && len(vs.Values) > 0 {
				if bl, ok := vs.Values[0].(*ast.BasicLit); ok {
					v, _ := strconv.Unquote(bl.Value)
					types = append(types, v)
				}
			}
		}
	}
	if len(types) < 7 {
		t.Fatalf("only %d condition types found in api/v1alpha1", len(types))
	}
	ref := referenceFile(t)
	rows := map[string]bool{}
	for i, l := range ref.lines {
		if !ref.code[i] && strings.HasPrefix(l, "| `") {
			rows[strings.Trim(strings.SplitN(strings.Trim(l, "| "), " | ", 2)[0], "`")] = true
		}
	}
	for _, c := range types {
		if !rows[c] {
			t.Errorf("%s: the conditions table has no row for the condition %s", referenceDoc, c)
		}
	}
	t.Logf("%d condition types: %s", len(types), fmt.Sprint(types))
}
