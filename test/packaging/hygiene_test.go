package packaging

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestProjectHygiene: the license (Apache-2.0, in full, and the Python package's copy identical
// to it, declared as an SPDX expression), the changelog in Keep a Changelog form, the security
// policy, and one version everywhere (chart version, appVersion, the changelog's latest release,
// VERSION).
func TestProjectHygiene(t *testing.T) {
	license := mustRead(t, "LICENSE")
	for _, want := range []string{"Apache License", "Version 2.0, January 2004", "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "END OF TERMS AND CONDITIONS"} {
		if !bytes.Contains(license, []byte(want)) {
			t.Errorf("LICENSE lacks %q: it should hold the full Apache-2.0 text", want)
		}
	}
	if !bytes.Equal(mustRead(t, "clients/python/LICENSE"), license) {
		t.Error("clients/python/LICENSE differs from LICENSE (the Python package ships a copy: PEP 639 forbids paths outside its directory)")
	}
	py := string(mustRead(t, "clients/python/pyproject.toml"))
	for _, re := range []string{`(?m)^license = "Apache-2.0"$`, `(?m)^license-files = \["LICENSE"\]$`, `requires = \["setuptools>=(7[7-9]|[89][0-9]|[1-9][0-9]{2,})"\]`} {
		if !regexp.MustCompile(re).MatchString(py) {
			t.Errorf("clients/python/pyproject.toml does not match %s (SPDX license expression, which needs setuptools >= 77)", re)
		}
	}
	if strings.Contains(py, "License ::") {
		t.Error("clients/python/pyproject.toml has a license classifier: with a license expression, PEP 639 forbids them")
	}

	changelog := string(mustRead(t, "CHANGELOG.md"))
	if !strings.Contains(changelog, "## [Unreleased]") {
		t.Error("CHANGELOG.md has no [Unreleased] section")
	}
	releases := regexp.MustCompile(`(?m)^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$`).FindAllStringSubmatch(changelog, -1)
	if len(releases) == 0 {
		t.Fatal("CHANGELOG.md has no release section `## [x.y.z] - YYYY-MM-DD`")
	}
	for _, v := range append([]string{"Unreleased"}, releases[0][1]) {
		if !regexp.MustCompile(`(?m)^\[` + regexp.QuoteMeta(v) + `\]: https://`).MatchString(changelog) {
			t.Errorf("CHANGELOG.md has no link reference for [%s]", v)
		}
	}
	for _, s := range regexp.MustCompile(`(?m)^### (.+)$`).FindAllStringSubmatch(changelog, -1) {
		switch s[1] {
		case "Added", "Changed", "Deprecated", "Removed", "Fixed", "Security":
		default:
			t.Errorf("CHANGELOG.md section %q is not one of Keep a Changelog's", s[1])
		}
	}

	security := string(mustRead(t, "SECURITY.md"))
	for _, want := range []string{"## Reporting a vulnerability", "## Supported versions", "security/advisories/new"} {
		if !strings.Contains(security, want) {
			t.Errorf("SECURITY.md lacks %q", want)
		}
	}

	// kubectl resolves mlflowaccesstokens and the short names mlflowtoken and mat, not the plural
	// of a short name.
	docs, _ := filepath.Glob(filepath.Join(repoRoot(t), "docs", "*.md"))
	docs = append(docs, filepath.Join(repoRoot(t), "README.md"), filepath.Join(repoRoot(t), chartDir, "README.md"),
		filepath.Join(repoRoot(t), chartDir, "templates", "NOTES.txt"), filepath.Join(repoRoot(t), "config", "prometheus", "rules.yaml"))
	for _, d := range docs {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`\bmlflowtokens\b`).Match(b) {
			t.Errorf("%s says `mlflowtokens`, which kubectl does not resolve: use mlflowaccesstokens", d)
		}
	}

	// VERSION is the version this checkout becomes when released: the changelog's latest release
	// only when nothing is unreleased (the release commit), else a later one, as a pre-release
	// (X.Y.Z-alpha.N) until it is cut.
	latest := releases[0][1]
	version := strings.TrimSpace(string(mustRead(t, "VERSION")))
	unreleased := changelog[strings.Index(changelog, "## [Unreleased]"):strings.Index(changelog, releases[0][0])]
	pending := strings.Contains(unreleased, "\n- ")
	m := regexp.MustCompile(`^(\d+\.\d+\.\d+)(-(alpha|beta|rc)\.\d+)?$`).FindStringSubmatch(version)
	switch {
	case m == nil:
		t.Errorf("VERSION %q is not X.Y.Z or X.Y.Z-(alpha|beta|rc).N", version)
	case pending && (m[2] == "" || !semverLess(latest, m[1])):
		t.Errorf("VERSION is %s while CHANGELOG.md lists unreleased changes after %s: want a later version's pre-release (e.g. %s-alpha.0)", version, latest, "X.Y.Z")
	case !pending && version != latest:
		t.Errorf("VERSION is %s, but nothing is unreleased since %s: a release commit says %s", version, latest, latest)
	}
	// The chart, the installer's tag, the plugins' built-in versions and the Python package say
	// the same as VERSION: test/release's TestVersionsInStep.
}

// semverLess: a < b for X.Y.Z versions.
func semverLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range 3 {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return false
}
