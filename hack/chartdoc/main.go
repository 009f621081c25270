// Command chartdoc writes the values table of a Helm chart's README from the comments of its
// values.yaml, as helm-docs does: a value is documented by a comment starting with "# --" right
// above it (continued on the following comment lines). A map whose key has such a comment is one
// row, with the whole map as its default; a map without one is described by its own keys. A
// value with no "# --" comment anywhere on its path is an error, so nothing goes undocumented.
//
// The table replaces what lies between the README's markers
//
//	<!-- values:begin -->
//	<!-- values:end -->
//
// Usage: go run ./hack/chartdoc [-check] [chart dir]   (default charts/mlflow-token-operator)
// With -check it changes nothing and fails when the README is stale (test/packaging runs it).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

const (
	beginMarker = "<!-- values:begin -->"
	endMarker   = "<!-- values:end -->"
)

type row struct{ key, typ, def, desc string }

func main() {
	check := flag.Bool("check", false, "fail when the README's table is stale instead of writing it")
	flag.Parse()
	dir := "charts/mlflow-token-operator"
	if flag.NArg() > 0 {
		dir = flag.Arg(0)
	}
	if err := run(dir, *check); err != nil {
		fmt.Fprintln(os.Stderr, "chartdoc:", err)
		os.Exit(1)
	}
}

func run(dir string, check bool) error {
	values, err := os.ReadFile(filepath.Join(dir, "values.yaml"))
	if err != nil {
		return err
	}
	rows, err := rowsOf(values)
	if err != nil {
		return err
	}
	readmePath := filepath.Join(dir, "README.md")
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		return err
	}
	updated, err := replaceTable(readme, table(rows))
	if err != nil {
		return fmt.Errorf("%s: %w", readmePath, err)
	}
	if bytes.Equal(updated, readme) {
		return nil
	}
	if check {
		return fmt.Errorf("the values table of %s is stale: run `make helm-docs` (go run ./hack/chartdoc)", readmePath)
	}
	return os.WriteFile(readmePath, updated, 0o644)
}

// rowsOf documents every value of a values.yaml.
func rowsOf(values []byte) ([]row, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(values, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("values.yaml is not a map")
	}
	var rows []row
	var undocumented []string
	var walk func(prefix string, m *yaml.Node)
	walk = func(prefix string, m *yaml.Node) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			key := prefix + k.Value
			desc := description(k.HeadComment)
			switch {
			case desc != "":
				rows = append(rows, row{key: key, typ: typeOf(v), def: defaultOf(v), desc: desc})
			case v.Kind == yaml.MappingNode && len(v.Content) > 0:
				walk(key+".", v)
			default:
				undocumented = append(undocumented, key)
			}
		}
	}
	walk("", doc.Content[0])
	if len(undocumented) > 0 {
		return nil, fmt.Errorf("values without a `# --` comment: %s", strings.Join(undocumented, ", "))
	}
	return rows, nil
}

// description returns the text of the "# --" comment, joined into one line.
func description(comment string) string {
	var parts []string
	started := false
	for _, line := range strings.Split(comment, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "# --"):
			started = true
			parts = []string{strings.TrimSpace(strings.TrimPrefix(line, "# --"))}
		case started && strings.HasPrefix(line, "#"):
			parts = append(parts, strings.TrimSpace(strings.TrimPrefix(line, "#")))
		case started && line == "":
			started = false // a blank line ends the description
		}
	}
	return strings.Join(parts, " ")
}

func typeOf(v *yaml.Node) string {
	switch v.Kind {
	case yaml.MappingNode:
		return "object"
	case yaml.SequenceNode:
		return "list"
	}
	switch v.Tag {
	case "!!int":
		return "int"
	case "!!float":
		return "float"
	case "!!bool":
		return "bool"
	case "!!null":
		return "null"
	}
	return "string"
}

// defaultOf renders a value compactly, as JSON.
func defaultOf(v *yaml.Node) string {
	var x any
	if err := v.Decode(&x); err != nil {
		return v.Value
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		return v.Value
	}
	return strings.TrimSpace(buf.String())
}

func table(rows []row) string {
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|---|---|---|---|\n")
	esc := strings.NewReplacer("|", `\|`)
	for _, r := range rows {
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", r.key, r.typ, esc.Replace(r.def), esc.Replace(r.desc))
	}
	return b.String()
}

func replaceTable(readme []byte, tbl string) ([]byte, error) {
	s := string(readme)
	begin := strings.Index(s, beginMarker)
	end := strings.Index(s, endMarker)
	if begin < 0 || end < begin {
		return nil, fmt.Errorf("no %s ... %s markers", beginMarker, endMarker)
	}
	return []byte(s[:begin+len(beginMarker)] + "\n" + tbl + s[end:]), nil
}
