package packaging

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"
)

// The tests of this file read every document a user reads (the Markdown files of the repository,
// the chart's NOTES.txt, the comments of config/samples) and check what they tell users to type
// against what the repository defines:
//
//   - TestDocsKubectlCommands: kubectl commands name resources kubectl resolves (our CRDs' names);
//   - TestDocsChartValues: chart values exist in values.yaml;
//   - TestDocsStandAlone: no pointer to documents users do not have; links and anchors resolve;
//   - TestDocsFlags: flags exist in the operator's or the plugin's sources, and the flags table
//     of docs/reference.md lists every flag of the operator;
//   - TestDocsMermaid: the diagrams parse (Mermaid's own parser, under Node.js);
//   - TestDocsReferences: quoted repository paths, make targets and test names exist.
//
// (TestTroubleshootingCoversEveryReason, in docs_test.go, checks that every condition reason of
// the API is explained.) Each rule also runs on a wrong example, so that a scanner that finds
// nothing fails too.

// docFile is one user-facing document, split into lines.
type docFile struct {
	rel   string   // slash-separated, relative to the repository root
	lines []string // without line ends
	code  []bool   // inside a fenced code block; every line of a plain-text file or YAML comment
	md    bool
}

// docSpan is a piece of a document: an inline code span, a (joined) code line, or a prose block.
type docSpan struct {
	file *docFile
	line int // 1-based, where the piece starts
	text string
}

func (s docSpan) at() string { return fmt.Sprintf("%s:%d", s.file.rel, s.line) }

// docFiles finds the user-facing documents: every *.md outside build output, tool folders and
// test data, the chart's NOTES.txt, and the samples' YAML comments.
func docFiles(t testing.TB) []*docFile {
	t.Helper()
	root := repoRoot(t)
	var out []*docFile
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		name := d.Name()
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".egg-info") ||
				map[string]bool{"bin": true, "dist": true, "vendor": true, "node_modules": true, "testdata": true, "tmp": true, "__pycache__": true}[name]) {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case strings.HasSuffix(name, ".md"):
			out = append(out, readDoc(t, p, rel, true, false))
		case name == "NOTES.txt" && strings.HasPrefix(rel, "charts/"):
			out = append(out, readDoc(t, p, rel, false, false))
		case strings.HasPrefix(rel, "config/samples/") && strings.HasSuffix(name, ".yaml"):
			out = append(out, readDoc(t, p, rel, false, true))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var fenceRE = regexp.MustCompile("^\\s*(```+|~~~+)")

func readDoc(t testing.TB, p, rel string, md, yamlComments bool) *docFile {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f := &docFile{rel: rel, lines: strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"), md: md}
	f.code = make([]bool, len(f.lines))
	var fence string
	for i, l := range f.lines {
		switch {
		case yamlComments:
			// Only what a person reads: the comments, not the YAML itself.
			if _, c, ok := strings.Cut(l, "#"); ok {
				f.lines[i] = c
				f.code[i] = true
			} else {
				f.lines[i] = ""
			}
		case !md:
			f.code[i] = true
		case fence != "":
			if m := fenceRE.FindStringSubmatch(l); m != nil && m[1][0] == fence[0] && len(m[1]) >= len(fence) && strings.TrimSpace(l) == m[1] {
				fence = ""
			} else {
				f.code[i] = true
			}
		default:
			if m := fenceRE.FindStringSubmatch(l); m != nil {
				fence = m[1]
			}
		}
	}
	return f
}

// codeLines are the lines of code blocks, a line that ends with a backslash joined with the next.
func (f *docFile) codeLines() []docSpan {
	var out []docSpan
	for i := 0; i < len(f.lines); i++ {
		if !f.code[i] {
			continue
		}
		start, text := i, f.lines[i]
		for strings.HasSuffix(strings.TrimRight(text, " "), `\`) && i+1 < len(f.lines) && f.code[i+1] {
			i++
			text = strings.TrimSuffix(strings.TrimRight(text, " "), `\`) + " " + strings.TrimSpace(f.lines[i])
		}
		out = append(out, docSpan{f, start + 1, text})
	}
	return out
}

var listItemRE = regexp.MustCompile(`^\s*([-*+]|\d+\.)\s`)

// proseBlocks are the Markdown text outside code blocks, as blocks that inline code can span:
// paragraphs, list items, table rows and headings.
func (f *docFile) proseBlocks() []docSpan {
	if !f.md {
		return nil
	}
	var out []docSpan
	var cur *docSpan
	flush := func() {
		if cur != nil {
			out = append(out, *cur)
			cur = nil
		}
	}
	for i, l := range f.lines {
		trimmed := strings.TrimSpace(l)
		if f.code[i] || trimmed == "" || fenceRE.MatchString(l) {
			flush()
			continue
		}
		own := strings.HasPrefix(trimmed, "|") || strings.HasPrefix(trimmed, "#")
		if own || listItemRE.MatchString(l) {
			flush()
		}
		if cur == nil {
			cur = &docSpan{f, i + 1, l}
		} else {
			cur.text += "\n" + l
		}
		if own {
			flush()
		}
	}
	flush()
	return out
}

// inlineCode returns the code spans of a prose block (CommonMark: a run of n backticks up to the
// next run of exactly n), with the line each starts on. rest is the block with the spans blanked.
func inlineCode(b docSpan) (spans []docSpan, rest string) {
	s := b.text
	var sb strings.Builder
	for i := 0; i < len(s); {
		if s[i] != '`' {
			sb.WriteByte(s[i])
			i++
			continue
		}
		n := 0
		for i+n < len(s) && s[i+n] == '`' {
			n++
		}
		end := -1
		for j := i + n; j < len(s); {
			if s[j] != '`' {
				j++
				continue
			}
			m := 0
			for j+m < len(s) && s[j+m] == '`' {
				m++
			}
			if m == n {
				end = j
				break
			}
			j += m
		}
		if end < 0 { // an unmatched run is literal text
			sb.WriteString(s[i : i+n])
			i += n
			continue
		}
		content := strings.ReplaceAll(s[i+n:end], "\n", " ")
		if len(content) > 2 && content[0] == ' ' && content[len(content)-1] == ' ' {
			content = content[1 : len(content)-1]
		}
		spans = append(spans, docSpan{b.file, b.line + strings.Count(s[:i], "\n"), content})
		for _, c := range []byte(s[i : end+n]) { // blank, keeping the line breaks that count lines
			if c != '\n' {
				c = ' '
			}
			sb.WriteByte(c)
		}
		i = end + n
	}
	return spans, sb.String()
}

// allInlineCode is every inline code span of every document.
func allInlineCode(files []*docFile) []docSpan {
	var out []docSpan
	for _, f := range files {
		for _, b := range f.proseBlocks() {
			spans, _ := inlineCode(b)
			out = append(out, spans...)
		}
	}
	return out
}

// ---------------------------------------------------------------------------------------------
// a. kubectl commands name resources kubectl resolves.

const apiGroup = "auth.mlflow-token-operator.io"

// kubectlNames are the names kubectl resolves to resources: for our group, what the CRDs in
// config/crd/bases define (plural, singular, short names, kind); for everything else an explicit
// list of the built-in (and well-known add-on) resources the documents may name.
type kubectlNames struct {
	ours   map[string]bool // lower case
	crds   map[string]bool // CRD object names: <plural>.<group>
	others map[string]bool
}

func kubectlResourceNames(t testing.TB) kubectlNames {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	n := kubectlNames{ours: map[string]bool{}, crds: map[string]bool{}, others: map[string]bool{}}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var crd struct {
			Metadata struct{ Name string }
			Spec     struct {
				Group string
				Names struct {
					Plural, Singular, Kind string
					ShortNames             []string
				}
			}
		}
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		names := crd.Spec.Names
		if crd.Spec.Group != apiGroup || names.Plural == "" || names.Kind == "" {
			t.Fatalf("%s: group %q, names %+v: not a CRD of %s", file, crd.Spec.Group, names, apiGroup)
		}
		n.crds[crd.Metadata.Name] = true
		for _, s := range append([]string{names.Plural, names.Singular, names.Kind}, names.ShortNames...) {
			n.ours[strings.ToLower(s)] = true
		}
	}
	// Not every resource kubectl knows: the ones a user of this operator is sent to look at. A
	// new one in the docs is added here on purpose.
	for _, group := range [][]string{
		{"pods", "pod", "po"}, {"secrets", "secret"}, {"configmaps", "configmap", "cm"},
		{"events", "event", "ev"}, {"namespaces", "namespace", "ns"},
		{"serviceaccounts", "serviceaccount", "sa"}, {"services", "service", "svc"},
		{"endpoints", "ep"}, {"endpointslices", "endpointslice"}, {"nodes", "node", "no"},
		{"deployments", "deployment", "deploy"}, {"replicasets", "replicaset", "rs"},
		{"statefulsets", "statefulset", "sts"}, {"daemonsets", "daemonset", "ds"},
		{"jobs", "job"}, {"cronjobs", "cronjob", "cj"}, {"leases", "lease"},
		{"roles", "role"}, {"rolebindings", "rolebinding"}, {"clusterroles", "clusterrole"},
		{"clusterrolebindings", "clusterrolebinding"},
		{"poddisruptionbudgets", "poddisruptionbudget", "pdb"},
		{"customresourcedefinitions", "customresourcedefinition", "crd", "crds"},
		{"all"},
		// prometheus-operator's kinds, for the monitoring objects the chart can create.
		{"servicemonitors", "servicemonitor"}, {"prometheusrules", "prometheusrule"},
	} {
		for _, s := range group {
			n.others[s] = true
		}
	}
	return n
}

// resolves says whether kubectl resolves a resource argument ("mat", "pods", "lease.coordination.k8s.io",
// "mlflowaccesstokens.v1alpha1.auth.mlflow-token-operator.io").
func (n kubectlNames) resolves(arg string) bool {
	res, group, _ := strings.Cut(strings.ToLower(arg), ".")
	if group != "" {
		if _, g, ok := strings.Cut(group, "."); ok && strings.HasPrefix(group, "v") && strings.HasSuffix(g, apiGroup) {
			group = g // resource.version.group
		}
		if group == apiGroup {
			return n.ours[res]
		}
		return n.others[res]
	}
	return n.ours[res] || n.others[res]
}

var (
	kubectlVerbs = map[string]bool{"get": true, "describe": true, "wait": true, "delete": true, "edit": true,
		"patch": true, "annotate": true, "label": true, "explain": true}
	// Flags of those verbs (and kubectl's global ones) that take a value as the next argument.
	kubectlValueFlags = map[string]bool{"-n": true, "--namespace": true, "-l": true, "--selector": true,
		"-o": true, "--output": true, "--field-selector": true, "--for": true, "--timeout": true,
		"--type": true, "-p": true, "--patch": true, "--patch-file": true, "-f": true, "--filename": true,
		"-k": true, "--kustomize": true, "--context": true, "--kubeconfig": true, "--cluster": true,
		"--user": true, "-s": true, "--server": true, "--token": true, "--as": true, "--as-group": true,
		"--sort-by": true, "--template": true, "-L": true, "--label-columns": true, "--raw": true,
		"--api-version": true, "--subresource": true, "--chunk-size": true, "--request-timeout": true,
		"--grace-period": true}
	placeholderRE = regexp.MustCompile(`<[^<>\n]*>`)
	kubectlRE     = regexp.MustCompile("(?:^|[\\s$(`'\"])kubectl\\s+")
)

// shellWords splits a command line as a shell would, roughly: quotes group, and an unquoted
// | ; & ) > or a # after a blank ends the command. Placeholders like <operator namespace> are one
// word.
func shellWords(s string) []string {
	s = placeholderRE.ReplaceAllString(s, "PLACEHOLDER")
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for i, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case strings.ContainsRune("|;&)>", r) || (r == '#' && (i == 0 || s[i-1] == ' ')):
			if inWord {
				words = append(words, cur.String())
			}
			return words
		case unicode.IsSpace(r):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// kubectlCommands finds the kubectl commands of a piece of text (one per occurrence).
func kubectlCommands(text string) [][]string {
	var out [][]string
	for _, loc := range kubectlRE.FindAllStringIndex(text, -1) {
		start := loc[0]
		if text[start] != 'k' {
			start++
		}
		out = append(out, shellWords(text[start:]))
	}
	return out
}

// checkKubectl checks one kubectl command: checked is false for a verb it does not check (create,
// logs, a plugin), and problem says what is wrong ("" when nothing is). mention: the command is
// quoted in prose, where a bare `kubectl describe` names the command rather than running it.
func (n kubectlNames) checkKubectl(words []string, mention bool) (checked bool, problem string) {
	i := 1
	for i < len(words) && strings.HasPrefix(words[i], "-") { // global flags before the verb
		if !strings.Contains(words[i], "=") && kubectlValueFlags[words[i]] {
			i++
		}
		i++
	}
	if i >= len(words) || !kubectlVerbs[words[i]] {
		return false, ""
	}
	verb := words[i]
	var args []string
	raw := false
	for i++; i < len(words); i++ {
		w := words[i]
		if strings.HasPrefix(w, "-") {
			name, _, hasValue := strings.Cut(w, "=")
			if name == "--raw" || name == "-f" || name == "--filename" || name == "-k" || name == "--kustomize" {
				raw = true
			}
			if !hasValue && kubectlValueFlags[name] {
				i++
			}
			continue
		}
		args = append(args, w)
	}
	if len(args) == 0 {
		if raw || mention {
			return true, ""
		}
		return true, fmt.Sprintf("`%s` names no resource", strings.Join(words, " "))
	}
	var bad []string
	switch {
	case verb == "explain":
		res, _, _ := strings.Cut(args[0], ".")
		if !n.resolves(res) {
			bad = append(bad, res)
		}
	case strings.Contains(args[0], "/"): // TYPE/NAME [TYPE/NAME...]
		for _, a := range args {
			res, _, ok := strings.Cut(a, "/")
			if ok && !n.resolves(res) {
				bad = append(bad, res)
			}
		}
	default: // TYPE[,TYPE...] [NAME...]
		types := strings.Split(args[0], ",")
		for _, res := range types {
			if !n.resolves(res) {
				bad = append(bad, res)
			}
		}
		if crd := strings.ToLower(types[0]); len(types) == 1 && (crd == "crd" || crd == "crds" || strings.HasPrefix(crd, "customresourcedefinition")) {
			for _, name := range args[1:] {
				if strings.HasSuffix(name, "."+apiGroup) && !n.crds[name] {
					bad = append(bad, "CRD "+name)
				}
			}
		}
	}
	if len(bad) > 0 {
		return true, fmt.Sprintf("`%s`: kubectl resolves no %q (for %s: the CRDs' plural, singular, short names and kinds)",
			strings.Join(words, " "), bad, apiGroup)
	}
	return true, ""
}

// docKubectlCommands checks every kubectl command of the documents and returns how many it checked.
func docKubectlCommands(t testing.TB, files []*docFile, names kubectlNames) (checked int, problems []string) {
	t.Helper()
	check := func(s docSpan, mention bool) {
		for _, words := range kubectlCommands(s.text) {
			ok, problem := names.checkKubectl(words, mention)
			if ok {
				checked++
			}
			if problem != "" {
				problems = append(problems, s.at()+": "+problem)
			}
		}
	}
	for _, f := range files {
		for _, l := range f.codeLines() {
			check(l, false)
		}
	}
	for _, s := range allInlineCode(files) {
		check(s, true)
	}
	return checked, problems
}

func TestDocsKubectlCommands(t *testing.T) {
	names := kubectlResourceNames(t)
	files := docFiles(t)
	checked, problems := docKubectlCommands(t, files, names)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d kubectl commands checked in %d documents", checked, len(files))
	// The docs name kubectl commands in code blocks, inline code and NOTES.txt; finding fewer
	// means the scanner broke, not that the docs got better.
	if checked < 25 {
		t.Errorf("only %d kubectl commands found: the scanner no longer finds them", checked)
	}

	// The same scanner, on documents that are wrong.
	bad := &docFile{rel: "bad.md", md: true, lines: []string{
		"Run `kubectl get mlflowtokens -A` to list them.",
		"```sh",
		"kubectl -n team-a describe mlflowtokens/training-token",
		"kubectl get lease -n <operator namespace> foo,bar",
		"kubectl annotate crd mlflowtokens.auth.mlflow-token-operator.io a=b",
		"kubectl explain mlflowtoken.spec.grant   # fine",
		"kubectl get mat.auth.mlflow-token-operator.io,pods training-token   # fine",
		"kubectl get",
		"```",
	}}
	bad.code = []bool{false, false, true, true, true, true, true, true, false}
	_, problems = docKubectlCommands(t, []*docFile{bad}, names)
	sort.Strings(problems)
	want := []string{"bad.md:1:", "bad.md:3:", "bad.md:5:", "bad.md:8:"}
	if len(problems) != len(want) {
		t.Fatalf("wrong commands: want %d problems (%q), got %q", len(want), want, problems)
	}
	for i, p := range problems {
		if !strings.HasPrefix(p, want[i]) {
			t.Errorf("problem %d: want it at %s, got %q", i, want[i], p)
		}
	}
	if !strings.Contains(problems[0], `"mlflowtokens"`) {
		t.Errorf("the message should name the unknown resource: %q", problems[0])
	}
	// Line 4 (a lease, two names, a placeholder with a blank) is fine.
	if _, p := names.checkKubectl(shellWords("kubectl get lease -n <operator namespace> a b"), false); p != "" {
		t.Errorf("a placeholder with a blank broke the parsing: %s", p)
	}
}

// ---------------------------------------------------------------------------------------------
// b. Chart values named in the documents exist in values.yaml.

// chartValues is the chart's values.yaml, and its schema to tell which maps take any key.
type chartValues struct {
	values map[string]any
	schema map[string]any
}

func loadChartValues(t testing.TB) chartValues {
	t.Helper()
	var v chartValues
	if err := yaml.Unmarshal(mustRead(t, chartDir+"/values.yaml"), &v.values); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(mustRead(t, chartDir+"/values.schema.json"), &v.schema); err != nil {
		t.Fatal(err)
	}
	return v
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

// has says whether a value path (image.digest, extraEnv[0].name, podAnnotations.prometheus\.io/scrape)
// names a value of the chart. A key of values.yaml may contain dots; a map that values.yaml
// leaves empty or open (its schema allows more properties: labels, annotations) and a list take
// any path below them.
func (c chartValues) has(p string) bool {
	p = indexRE.ReplaceAllString(p, "")
	var segs []string
	for _, s := range regexp.MustCompile(`(?:\\.|[^.])+`).FindAllString(p, -1) {
		segs = append(segs, strings.ReplaceAll(s, `\.`, "."))
	}
	return len(segs) > 0 && walkValue(c.values, c.schema, segs)
}

func walkValue(v any, schema map[string]any, segs []string) bool {
	if len(segs) == 0 {
		return true
	}
	switch v := v.(type) {
	case []any:
		return true // list items are the user's
	case map[string]any:
		props, _ := schema["properties"].(map[string]any)
		for i := len(segs); i >= 1; i-- { // the longest key first: keys may contain dots
			key := strings.Join(segs[:i], ".")
			if sub, ok := v[key]; ok {
				subSchema, _ := props[key].(map[string]any)
				if walkValue(sub, subSchema, segs[i:]) {
					return true
				}
			}
		}
		if open, ok := schema["additionalProperties"].(bool); ok && !open {
			return false
		}
		return schema != nil && len(props) == 0 // an open map: its keys are the user's
	}
	return false
}

var (
	setRE = regexp.MustCompile(`--set(?:-string|-json|-file|-literal)?[ =](\S+)`)
	// A value path, maybe with "=value": image.digest, crds.keep=true, extraEnv[0].name.
	valuePathRE = regexp.MustCompile(`^([a-z][a-zA-Z0-9_]*(?:\[\d+\])?(?:\.[a-zA-Z][a-zA-Z0-9_]*(?:\[\d+\])?)*)(?:=\S*)?$`)
	// Prose that introduces a chart value: "Helm value `x`", "Helm `x`", "the chart's `x`".
	valueIntroRE = regexp.MustCompile(`(?i)(?:\bhelm(?: value)?|\bchart(?:'s)?(?: value)?)\s+$`)
	helmContext  = regexp.MustCompile(`(?i)\bhelm\b|\bchart`)
	// Dotted names in Helm prose that are not chart values: resource fields, files, domains.
	// configs: Argo CD's chart (docs/gitops.md).
	notValueRoots = map[string]bool{"spec": true, "status": true, "metadata": true, "data": true, "config": true,
		"attributes": true, "meta": true, "helm": true, "configs": true}
	fileExts = regexp.MustCompile(`\.(ya?ml|json|md|go|mod|sum|txt|io|com|org|sh|py|lua|tgz|tar|gz|png|whl|toml|crt|local|svc|tpl)$`)
)

// valueRefs are the chart values a document names, with where: every --set key, every inline
// code span that prose introduces as a value, every dotted inline name in a paragraph about Helm
// or the chart (the chart's README is about nothing else), and .Values references of the chart's
// templates.
func valueRefs(files []*docFile, chartFields map[string]bool) []docSpan {
	var out []docSpan
	addSet := func(s docSpan) {
		for _, m := range setRE.FindAllStringSubmatch(s.text, -1) {
			for _, kv := range regexp.MustCompile(`(?:\\.|[^,])+`).FindAllString(m[1], -1) {
				if k, _, ok := strings.Cut(kv, "="); ok {
					out = append(out, docSpan{s.file, s.line, strings.Trim(k, `"'`)})
				}
			}
		}
	}
	for _, f := range files {
		for _, l := range f.codeLines() {
			addSet(l)
			if !f.md {
				for _, m := range regexp.MustCompile(`\.Values\.([A-Za-z0-9_.]+)`).FindAllStringSubmatch(l.text, -1) {
					out = append(out, docSpan{f, l.line, m[1]})
				}
			}
		}
		chartDoc := strings.HasPrefix(f.rel, "charts/")
		for _, b := range f.proseBlocks() {
			spans, rest := inlineCode(b)
			for _, s := range spans {
				addSet(s)
			}
			helm := chartDoc || helmContext.MatchString(rest)
			for _, s := range spans {
				m := valuePathRE.FindStringSubmatch(s.text)
				if m == nil {
					continue
				}
				key := m[1]
				// Where does the span start in the block? Look at the prose just before it.
				intro := false
				if i := strings.Index(b.text, "`"+s.text+"`"); i >= 0 {
					intro = valueIntroRE.MatchString(b.text[:i])
				}
				root, _, dotted := strings.Cut(key, ".")
				switch {
				case intro && chartFields[key]: // "the chart's `appVersion`": Chart.yaml's
					continue
				case intro:
				case !helm || !dotted || notValueRoots[root] || fileExts.MatchString(key):
					continue
				}
				out = append(out, docSpan{s.file, s.line, key})
			}
		}
	}
	return out
}

func TestDocsChartValues(t *testing.T) {
	values := loadChartValues(t)
	files := docFiles(t)
	// The chart's templates are checked too: a .Values path missing from values.yaml renders empty.
	tmpl, _ := filepath.Glob(filepath.Join(repoRoot(t), chartDir, "templates", "*.yaml"))
	tests, _ := filepath.Glob(filepath.Join(repoRoot(t), chartDir, "templates", "*", "*.yaml"))
	for _, p := range append(tmpl, tests...) {
		rel, _ := filepath.Rel(repoRoot(t), p)
		files = append(files, readDoc(t, p, filepath.ToSlash(rel), false, false))
	}
	var chart map[string]any
	if err := yaml.Unmarshal(mustRead(t, chartDir+"/Chart.yaml"), &chart); err != nil {
		t.Fatal(err)
	}
	chartFields := map[string]bool{}
	for k := range chart {
		chartFields[k] = true
	}
	refs := valueRefs(files, chartFields)
	seen := map[string]bool{}
	for _, r := range refs {
		seen[r.text] = true
		if !values.has(r.text) {
			t.Errorf("%s: chart value %q is not in %s/values.yaml", r.at(), r.text, chartDir)
		}
	}
	t.Logf("%d chart value references checked (%d distinct)", len(refs), len(seen))
	if len(seen) < 20 {
		t.Errorf("only %d distinct chart values found: the scanner no longer finds them", len(seen))
	}

	// The rules themselves, on values that are right and wrong.
	for p, want := range map[string]bool{
		"image.digest": true, "crds.keep": true, "delivery.nudge.enabled": true, "watchNamespaces": true,
		"extraEnv[0].name": true, "podAnnotations.prometheus\\.io/scrape": true,
		"metrics.serviceMonitor.labels.release": true, "podSecurityContext.fsGroup": true,
		"namespaces": false, "image.digests": false, "delivery.nudge.qpsx": false, "crds.keep.x": false,
		"metrics.serviceMonitor.label": false,
	} {
		if got := values.has(p); got != want {
			t.Errorf("has(%q) = %v, want %v", p, got, want)
		}
	}
	bad := &docFile{rel: "bad.md", md: true, lines: []string{
		"Install with `helm install x chart --set image.digests=sha256:1 --set replicas=2`.",
		"The chart value `namespaces` lists them.",
		"With Helm, set `uninstall.revokeToken=false` to keep them;",
		"`status.token.audience` and `spec.keycloak.url` are not chart values, `ghcr.io` is no value either,",
		"and the chart's `appVersion` is in Chart.yaml.",
	}, code: make([]bool, 5)}
	var wrong []string
	for _, r := range valueRefs([]*docFile{bad}, chartFields) {
		if !values.has(r.text) {
			wrong = append(wrong, r.at()+" "+r.text)
		}
	}
	if want := []string{"bad.md:1 image.digests", "bad.md:2 namespaces", "bad.md:3 uninstall.revokeToken"}; strings.Join(wrong, ",") != strings.Join(want, ",") {
		t.Errorf("wrong chart values: want %q, got %q", want, wrong)
	}
}

// ---------------------------------------------------------------------------------------------
// c. The documents stand alone: no pointers outside the repository, and every link resolves.

var (
	linkRE    = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	refDefRE  = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)
	schemeRE  = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	outsideRE = regexp.MustCompile(`(?i)seed[\s-]+guide|\.\./shared\b|/work/`)
	headingRE = regexp.MustCompile(`^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	mdLinkRE  = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

type docLink struct {
	docSpan
	target string
}

// links are the link targets of a document's prose (inline links, images, reference definitions).
func (f *docFile) links() []docLink {
	var out []docLink
	for _, b := range f.proseBlocks() {
		_, rest := inlineCode(b) // a link inside inline code is code
		for _, m := range linkRE.FindAllStringSubmatchIndex(rest, -1) {
			line := b.line + strings.Count(rest[:m[0]], "\n")
			out = append(out, docLink{docSpan{f, line, rest[m[0]:m[1]]}, rest[m[2]:m[3]]})
		}
		for i, l := range strings.Split(rest, "\n") {
			if m := refDefRE.FindStringSubmatch(l); m != nil {
				out = append(out, docLink{docSpan{f, b.line + i, l}, m[1]})
			}
		}
	}
	return out
}

// githubAnchor is the id GitHub gives a heading: lower case, blanks to '-', punctuation dropped
// (letters, digits, '_' and '-' stay).
func githubAnchor(heading string) string {
	heading = mdLinkRE.ReplaceAllString(heading, "$1")
	heading = strings.NewReplacer("`", "", "*", "").Replace(heading)
	var sb strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			sb.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// anchors are the heading ids of a Markdown document, with GitHub's -1, -2 for repeats.
func (f *docFile) anchors() map[string]bool {
	out := map[string]bool{}
	count := map[string]int{}
	for i, l := range f.lines {
		if f.code[i] {
			continue
		}
		m := headingRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		a := githubAnchor(m[2])
		if c := count[a]; c > 0 {
			out[fmt.Sprintf("%s-%d", a, c)] = true
		} else {
			out[a] = true
		}
		count[a]++
	}
	return out
}

// docLinkProblems checks the links of the documents, resolved against root, and their text for
// pointers to documents users do not have. It returns what is wrong and how many links it checked.
func docLinkProblems(t testing.TB, root string, files []*docFile) (problems []string, checked int) {
	t.Helper()
	byPath := map[string]*docFile{}
	for _, f := range files {
		byPath[f.rel] = f
	}
	for _, f := range files {
		text := strings.Join(f.lines, "\n")
		for _, m := range outsideRE.FindAllStringIndex(text, -1) {
			problems = append(problems, fmt.Sprintf("%s:%d: %q points at a document outside the repository: say what users need here",
				f.rel, 1+strings.Count(text[:m[0]], "\n"), text[m[0]:m[1]]))
		}
		for _, l := range f.links() {
			if schemeRE.MatchString(l.target) {
				continue // a URL
			}
			checked++
			target, anchor, _ := strings.Cut(l.target, "#")
			rel := f.rel
			switch {
			case strings.HasPrefix(target, "/"):
				problems = append(problems, fmt.Sprintf("%s: link %q is absolute: it resolves against the forge's root, not the repository", l.at(), l.target))
				continue
			case target != "":
				rel = path.Clean(path.Join(path.Dir(f.rel), target))
				if rel == ".." || strings.HasPrefix(rel, "../") {
					problems = append(problems, fmt.Sprintf("%s: link %q leads outside the repository", l.at(), l.target))
					continue
				}
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(rel))); err != nil {
					problems = append(problems, fmt.Sprintf("%s: link %q: %s does not exist", l.at(), l.target, rel))
					continue
				}
			}
			if anchor == "" {
				continue
			}
			doc, ok := byPath[rel]
			if !ok || !doc.md {
				continue // an anchor into a file that is not Markdown (a line of code, say): not checked
			}
			if !doc.anchors()[anchor] {
				problems = append(problems, fmt.Sprintf("%s: link %q: %s has no heading #%s", l.at(), l.target, rel, anchor))
			}
		}
	}
	return problems, checked
}

func TestDocsStandAlone(t *testing.T) {
	files := docFiles(t)
	problems, checked := docLinkProblems(t, repoRoot(t), files)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d relative links checked in %d documents", checked, len(files))
	if checked < 40 {
		t.Errorf("only %d relative links found: the scanner no longer finds them", checked)
	}

	// The rules, on a small tree of wrong documents.
	root := t.TempDir()
	for rel, text := range map[string]string{
		"README.md": "# Title\n\n## Getting new tokens, into pods (`nudge`)\n\n## Same\n\n## Same\n\n" +
			"[ok](docs/a.md#a-heading) [ok](#getting-new-tokens-into-pods-nudge) [ok](#same-1)\n" +
			"[gone](docs/missing.md) [no heading](docs/a.md#nope) [up](../shared/notes.md)\n" +
			"As the seed\nguide says. `[code](nowhere.md)` [web](https://example.com/x.md)\n" +
			"[ref]: ../../outside.md\n",
		"docs/a.md": "# A heading\n\n```md\n# not a heading\n[not a link](missing.md)\n```\n[abs](/etc/passwd)\n",
	} {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var fake []*docFile
	for _, rel := range []string{"README.md", "docs/a.md"} {
		fake = append(fake, readDoc(t, filepath.Join(root, rel), rel, true, false))
	}
	problems, _ = docLinkProblems(t, root, fake)
	sort.Strings(problems)
	want := []string{
		`README.md:10: "../shared" points`, // the text
		`README.md:10: link "../shared/notes.md" leads outside`,
		`README.md:10: link "docs/a.md#nope"`,
		`README.md:10: link "docs/missing.md"`,
		`README.md:11: "seed\nguide" points`,
		`README.md:13: link "../../outside.md" leads outside`,
		`docs/a.md:7: link "/etc/passwd" is absolute`,
	}
	if len(problems) != len(want) {
		t.Fatalf("want %d problems, got %d:\n%s", len(want), len(problems), strings.Join(problems, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(problems[i], want[i]) {
			t.Errorf("problem %d: want %q..., got %q", i, want[i], problems[i])
		}
	}
	if got := githubAnchor("8. Without a client secret: Kubernetes service-account tokens"); got != "8-without-a-client-secret-kubernetes-service-account-tokens" {
		t.Errorf("githubAnchor: %q", got)
	}
}

// ---------------------------------------------------------------------------------------------
// e. Flags named in the documents exist, and docs/reference.md's table lists every operator flag.

var goFlagRE = regexp.MustCompile(`\b(?:flag|fs|Flags\(\)|PersistentFlags\(\))\.[A-Z]\w*\((?:&[^,]+,\s*)?"([a-z0-9][a-z0-9-]*)"`)

// goFlags reads flag names from Go sources (flag.XxxVar(&v, "name", ...), fs.Xxx("name", ...),
// cobra's cmd.Flags().XxxVarP(&v, "name", ...)).
func goFlags(t testing.TB, globs ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, g := range globs {
		files, err := filepath.Glob(filepath.Join(repoRoot(t), g))
		if err != nil || len(files) == 0 {
			t.Fatalf("no files %s: %v", g, err)
		}
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range goFlagRE.FindAllStringSubmatch(string(b), -1) {
				out[m[1]] = true
			}
		}
	}
	return out
}

type docFlagSets struct {
	operator, zap, subcommands, plugin, kube map[string]bool
	subcommandNames                          map[string]bool
}

func loadDocFlagSets(t testing.TB) docFlagSets {
	t.Helper()
	s := docFlagSets{
		operator:    goFlags(t, "cmd/main.go"),
		subcommands: goFlags(t, "cmd/subcommands.go"),
		plugin:      goFlags(t, "cmd/kubectl-mlflow_token/*.go"),
		zap:         map[string]bool{},
		kube:        map[string]bool{},
	}
	zfs := flag.NewFlagSet("zap", flag.ContinueOnError)
	(&zap.Options{}).BindFlags(zfs) // cmd/main.go binds these
	zfs.VisitAll(func(f *flag.Flag) { s.zap[f.Name] = true })
	// The plugin binds kubectl's connection flags with clientcmd (cmd/kubectl-mlflow_token/kubeflags.go).
	pfs := pflag.NewFlagSet("kube", pflag.ContinueOnError)
	clientcmd.BindOverrideFlags(&clientcmd.ConfigOverrides{}, pfs, clientcmd.RecommendedConfigOverrideFlags(""))
	pfs.VisitAll(func(f *pflag.Flag) { s.kube[f.Name] = true })
	// The plugin's commands: cobra's Use, renew and revoke from newRequestCommand, and cobra's
	// own help and completion.
	s.subcommandNames = map[string]bool{"help": true, "completion": true}
	useRE := regexp.MustCompile(`Use:\s*"([a-z-]+)|newRequestCommand\([^,]+,[^,]+,\s*"([a-z-]+)"`)
	for _, file := range mustGlob(t, "cmd/kubectl-mlflow_token/*.go") {
		for _, m := range useRE.FindAllStringSubmatch(string(mustRead(t, file)), -1) {
			s.subcommandNames[m[1]+m[2]] = true
		}
	}
	for name, set := range map[string]map[string]bool{"cmd/main.go": s.operator, "zap": s.zap, "the plugin": s.plugin, "clientcmd": s.kube} {
		if len(set) < 3 {
			t.Fatalf("found only %d flags of %s: the flag scanner is broken", len(set), name)
		}
	}
	if !s.operator["leader-elect"] || !s.plugin["require-ready"] || !s.kube["context"] || !s.subcommandNames["bootstrap"] || !s.subcommandNames["renew"] {
		t.Fatalf("the flag scanner misses known flags: %+v", s)
	}
	return s
}

func mustGlob(t testing.TB, g string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), g))
	if err != nil || len(files) == 0 {
		t.Fatalf("no files %s: %v", g, err)
	}
	var out []string
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			rel, _ := filepath.Rel(repoRoot(t), f)
			out = append(out, rel)
		}
	}
	return out
}

// foreignFlags are flags of other programs that the documents quote on their own, in inline
// code, with the program they belong to.
var foreignFlags = map[string]string{
	"set":                              "helm",
	"hostname":                         "Keycloak",
	"truststore-paths":                 "Keycloak",
	"preserve-digests":                 "skopeo",
	"service-account-issuer":           "kube-apiserver",
	"service-account-jwks-uri":         "kube-apiserver",
	"service-account-key-file":         "kube-apiserver",
	"service-account-signing-key-file": "kube-apiserver",
	"cert-dir":                         "kube-apiserver",
}

var flagWordRE = regexp.MustCompile(`^--([a-z0-9][a-z0-9-]*)`)

// docFlagProblems checks the flags of inline code spans that start with a flag (those name the
// operator's or the plugin's flags in prose), and of `kubectl mlflow-token` commands.
func docFlagProblems(files []*docFile, s docFlagSets) (problems []string, checked int) {
	ours := func(name string) bool {
		return s.operator[name] || s.zap[name] || s.subcommands[name] || s.plugin[name] || s.kube[name] || name == "help"
	}
	plugin := func(name string) bool { return s.plugin[name] || s.kube[name] || name == "help" }
	var spans []docSpan
	for _, f := range files {
		spans = append(spans, f.codeLines()...)
	}
	inline := allInlineCode(files)
	for _, sp := range inline {
		if !strings.HasPrefix(sp.text, "--") {
			continue
		}
		for _, w := range strings.Fields(sp.text) {
			m := flagWordRE.FindStringSubmatch(w)
			if m == nil {
				continue
			}
			checked++
			if !ours(m[1]) && foreignFlags[m[1]] == "" {
				problems = append(problems, fmt.Sprintf("%s: flag --%s is not a flag of the operator (cmd/main.go, cmd/subcommands.go), the plugin (cmd/kubectl-mlflow_token), nor a known flag of another program", sp.at(), m[1]))
			}
		}
	}
	pluginRE := regexp.MustCompile(`\bkubectl\s+mlflow-token\b(.*)`)
	for _, sp := range append(spans, inline...) {
		m := pluginRE.FindStringSubmatch(sp.text)
		if m == nil {
			continue
		}
		words := shellWords(m[1])
		if len(words) > 0 && !strings.HasPrefix(words[0], "-") && !strings.HasPrefix(words[0], "PLACEHOLDER") {
			checked++
			if !s.subcommandNames[words[0]] {
				problems = append(problems, fmt.Sprintf("%s: `kubectl mlflow-token %s`: the plugin has no such command", sp.at(), words[0]))
			}
		}
		for _, w := range words {
			if fm := flagWordRE.FindStringSubmatch(w); fm != nil {
				checked++
				if !plugin(fm[1]) {
					problems = append(problems, fmt.Sprintf("%s: `kubectl mlflow-token`: the plugin has no flag --%s", sp.at(), fm[1]))
				}
			}
		}
	}
	return problems, checked
}

func TestDocsFlags(t *testing.T) {
	sets := loadDocFlagSets(t)
	files := docFiles(t)
	problems, checked := docFlagProblems(files, sets)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d flags and plugin commands checked", checked)
	if checked < 60 {
		t.Errorf("only %d flags found: the scanner no longer finds them", checked)
	}

	// The reference's flag table lists every flag of the operator, the logging ones included.
	var readme *docFile
	for _, f := range files {
		if f.rel == referenceDoc {
			readme = f
		}
	}
	documented := map[string]bool{}
	for _, b := range readme.proseBlocks() {
		if !strings.HasPrefix(strings.TrimSpace(b.text), "| `--") {
			continue
		}
		spans, _ := inlineCode(b)
		for _, sp := range spans {
			if m := flagWordRE.FindStringSubmatch(sp.text); m != nil {
				documented[m[1]] = true
			}
		}
	}
	for _, set := range []map[string]bool{sets.operator, sets.zap} {
		for name := range set {
			if !documented[name] {
				t.Errorf("%s: the flags table has no row for --%s", referenceDoc, name)
			}
		}
	}

	bad := &docFile{rel: "bad.md", md: true, lines: []string{
		"Raise `--kube-qps` and `--concurrency=8 --keycloak-qps=0`; `--truststore-paths=x` is Keycloak's.",
		"Run `kubectl mlflow-token renew NAME --wait=false --now` or `kubectl mlflow-token rotate NAME`.",
	}, code: make([]bool, 2)}
	problems, _ = docFlagProblems([]*docFile{bad}, sets)
	if len(problems) != 3 || !strings.Contains(problems[0], "--kube-qps") || !strings.Contains(problems[1], "--now") || !strings.Contains(problems[2], "`kubectl mlflow-token rotate`") {
		t.Errorf("wrong flags: want --kube-qps, --now and rotate reported, got %q", problems)
	}
}

// ---------------------------------------------------------------------------------------------
// Mermaid diagrams parse.

// mermaidBlocks are the ```mermaid blocks of a Markdown document.
func (f *docFile) mermaidBlocks() []docSpan {
	var out []docSpan
	for i := 0; i < len(f.lines); i++ {
		m := fenceRE.FindStringSubmatch(f.lines[i])
		if m == nil || f.code[i] || strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(f.lines[i]), m[1])) != "mermaid" {
			continue
		}
		var body []string
		j := i + 1
		for ; j < len(f.lines) && f.code[j]; j++ {
			body = append(body, f.lines[j])
		}
		out = append(out, docSpan{f, i + 1, strings.Join(body, "\n") + "\n"})
		i = j
	}
	return out
}

// TestDocsMermaid parses every Mermaid diagram of the docs with Mermaid's own parser (Node.js,
// hack/mermaid-check), as the forge does before it draws one: a diagram that does not parse shows
// as an error box. A broken diagram goes along, and must fail.
func TestDocsMermaid(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "bin", "mermaid-check")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "mermaid")); err != nil {
		t.Fatalf("Mermaid's parser is not installed (%v): run hack/mermaid-check.sh (needs Node.js and the npm registry once; `make test` does it)", err)
	}
	type diagram struct {
		ID   string `json:"id"`
		Text string `json:"text"`
	}
	var in []diagram
	for _, f := range docFiles(t) {
		for _, b := range f.mermaidBlocks() {
			in = append(in, diagram{b.at(), b.text})
		}
	}
	if len(in) < 4 {
		t.Fatalf("only %d Mermaid diagrams found: the scanner no longer finds them", len(in))
	}
	// From docs/how-it-works.md as it was: an unquoted "(" in an edge label, and a ";" that ends a
	// sequence diagram's statement.
	broken := []diagram{
		{"broken-1", "flowchart LR\n  ML -.->|validates JWT locally<br/>(JWKS)| KC\n"},
		{"broken-2", "sequenceDiagram\n  participant O as operator\n  O->>B: reads it (uncached); a new one starts a new chain\n"},
	}
	input, err := json.Marshal(append(in, broken...))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", filepath.Join(dir, "check.mjs"))
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s/check.mjs: %v\n%s", dir, err, stderr.String())
	}
	var results []struct {
		ID, Type, Error string
		OK              bool
	}
	if err := json.Unmarshal(out, &results); err != nil {
		t.Fatalf("reading the parser's answer %q: %v", out, err)
	}
	if len(results) != len(in)+len(broken) {
		t.Fatalf("%d diagrams sent, %d answers", len(in)+len(broken), len(results))
	}
	for _, r := range results {
		switch {
		case strings.HasPrefix(r.ID, "broken-") && r.OK:
			t.Errorf("the broken diagram %s parsed: the check cannot fail", r.ID)
		case strings.HasPrefix(r.ID, "broken-"):
		case !r.OK:
			t.Errorf("%s: the Mermaid diagram does not parse: %s", r.ID, r.Error)
		default:
			t.Logf("%s: %s parses", r.ID, r.Type)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Files, make targets and tests the documents name exist.

var (
	repoPathRE = regexp.MustCompile(`^(?:api|cmd|config|controllers|docs|hack|internal|test|charts|clients)/[A-Za-z0-9_./*{},-]*$`)
	goSymbolRE = regexp.MustCompile(`\.[A-Z]\w*$`)
	// make in command position: at the start (after a prompt), or after && ; ( .
	makeRE     = regexp.MustCompile(`(?:^\s*(?:\$\s+)?|&&\s*|;\s*|\(\s*)make\s+([a-z][a-z0-9-]*)`)
	testNameRE = regexp.MustCompile(`^Test[A-Z]\w*$`)
	runTestRE  = regexp.MustCompile(`-run[ =]'?\^?(Test[A-Z]\w*)`)
)

type repoFacts struct {
	root        string
	makeTargets map[string]bool
	tests       map[string]bool
}

func loadRepoFacts(t testing.TB) repoFacts {
	t.Helper()
	f := repoFacts{root: repoRoot(t), makeTargets: map[string]bool{}, tests: map[string]bool{}}
	for _, m := range regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):`).FindAllStringSubmatch(string(mustRead(t, "Makefile")), -1) {
		f.makeTargets[m[1]] = true
	}
	testFunc := regexp.MustCompile(`(?m)^func (Test[A-Z]\w*)\(`)
	err := filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != f.root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin" || d.Name() == "dist") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, "_test.go") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range testFunc.FindAllStringSubmatch(string(b), -1) {
				f.tests[m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !f.makeTargets["test"] || !f.tests["TestDocsReferences"] {
		t.Fatalf("the Makefile targets or test names were not found: %d targets, %d tests", len(f.makeTargets), len(f.tests))
	}
	return f
}

// docReferenceProblems checks the repository paths quoted in inline code, the make targets of
// commands, and the test names the documents cite.
func docReferenceProblems(files []*docFile, facts repoFacts) (problems []string, checked int) {
	exists := func(p string) bool {
		for _, c := range []string{p, goSymbolRE.ReplaceAllString(p, "")} { // internal/manager.New
			if m, _ := filepath.Glob(filepath.Join(facts.root, filepath.FromSlash(strings.TrimSuffix(c, "/")))); len(m) > 0 {
				return true
			}
		}
		return false
	}
	inline := allInlineCode(files)
	for _, s := range inline {
		if repoPathRE.MatchString(s.text) && !strings.ContainsAny(s.text, "{}") {
			checked++
			if !exists(s.text) {
				problems = append(problems, fmt.Sprintf("%s: %s does not exist in the repository", s.at(), s.text))
			}
		}
		if testNameRE.MatchString(s.text) {
			checked++
			if !facts.tests[s.text] {
				problems = append(problems, fmt.Sprintf("%s: no test is called %s", s.at(), s.text))
			}
		}
	}
	var code []docSpan
	for _, f := range files {
		code = append(code, f.codeLines()...)
	}
	for _, s := range append(code, inline...) {
		if !s.file.code[s.line-1] && !strings.HasPrefix(s.text, "make ") {
			// Prose quotes "make" as an English word; only code that starts with it is a command.
			for _, m := range runTestRE.FindAllStringSubmatch(s.text, -1) {
				checked++
				if !facts.tests[m[1]] {
					problems = append(problems, fmt.Sprintf("%s: -run %s: no test is called %s", s.at(), m[1], m[1]))
				}
			}
			continue
		}
		for _, m := range makeRE.FindAllStringSubmatch(s.text, -1) {
			checked++
			if !facts.makeTargets[m[1]] {
				problems = append(problems, fmt.Sprintf("%s: `make %s`: the Makefile has no such target", s.at(), m[1]))
			}
		}
		for _, m := range runTestRE.FindAllStringSubmatch(s.text, -1) {
			checked++
			if !facts.tests[m[1]] {
				problems = append(problems, fmt.Sprintf("%s: -run %s: no test is called %s", s.at(), m[1], m[1]))
			}
		}
	}
	return problems, checked
}

func TestDocsReferences(t *testing.T) {
	facts := loadRepoFacts(t)
	problems, checked := docReferenceProblems(docFiles(t), facts)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d paths, make targets and test names checked", checked)
	if checked < 80 {
		t.Errorf("only %d references found: the scanner no longer finds them", checked)
	}

	bad := &docFile{rel: "bad.md", md: true, lines: []string{
		"The policy lives in `internal/policies`, the realms in `test/keycloak/realm-*.json`, `internal/manager.New` wires it.",
		"`TestNoSuchThing` proves it; make sure to run `make tests`.",
		"```sh",
		"make test && go -C test test -run TestNoSuchOther ./packaging/   # make sure: not a target",
		"```",
	}, code: []bool{false, false, false, true, false}}
	problems, _ = docReferenceProblems([]*docFile{bad}, facts)
	sort.Strings(problems)
	want := []string{"bad.md:1: internal/policies", "bad.md:2: `make tests`", "bad.md:2: no test is called TestNoSuchThing", "bad.md:4: -run TestNoSuchOther"}
	if len(problems) != len(want) {
		t.Fatalf("want %d problems, got %q", len(want), problems)
	}
	for i := range want {
		if !strings.HasPrefix(problems[i], want[i]) {
			t.Errorf("problem %d: want %q..., got %q", i, want[i], problems[i])
		}
	}
}
