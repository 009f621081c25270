package packaging

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestForgeWorkflows checks what can be checked of the forge's workflows without the forge: each
// parses, its jobs' `needs` name jobs that exist, every `make` target a step runs exists in the
// Makefile, every `go -C DIR` and `cd DIR` names a directory of the repository (or dist/, which the
// release makes), and every action is pinned to a version.
func TestForgeWorkflows(t *testing.T) {
	root := repoRoot(t)
	makefile := string(mustRead(t, "Makefile"))
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-zA-Z0-9_-]+):`).FindAllStringSubmatch(makefile, -1) {
		targets[m[1]] = true
	}
	files, _ := filepath.Glob(filepath.Join(root, ".github", "workflows", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no workflows")
	}
	makeRe := regexp.MustCompile(`\bmake\s+([a-z][a-z0-9-]*)`)
	dirRe := regexp.MustCompile(`(?:go -C|cd)\s+([a-zA-Z0-9_./-]+)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var wf struct {
			Jobs map[string]struct {
				Needs any `json:"needs"`
				Steps []struct {
					Uses string `json:"uses"`
					Run  string `json:"run"`
				} `json:"steps"`
			} `json:"jobs"`
		}
		if err := yaml.Unmarshal(b, &wf); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		name := filepath.Base(f)
		if len(wf.Jobs) == 0 {
			t.Errorf("%s has no jobs", name)
		}
		for job, j := range wf.Jobs {
			var needs []string
			switch n := j.Needs.(type) {
			case string:
				needs = []string{n}
			case []any:
				for _, x := range n {
					needs = append(needs, x.(string))
				}
			}
			for _, n := range needs {
				if _, ok := wf.Jobs[n]; !ok {
					t.Errorf("%s: job %s needs %q, which does not exist", name, job, n)
				}
			}
			for _, s := range j.Steps {
				if s.Uses != "" && !regexp.MustCompile(`@(release/)?v[0-9]+|@[0-9a-f]{40}$`).MatchString(s.Uses) {
					t.Errorf("%s: job %s uses %q without a version", name, job, s.Uses)
				}
				for _, m := range makeRe.FindAllStringSubmatch(s.Run, -1) {
					if !targets[m[1]] {
						t.Errorf("%s: job %s runs `make %s`, which the Makefile lacks", name, job, m[1])
					}
				}
				if regexp.MustCompile(`\bgo (test|run|build|vet)\b[^\n]*\./test/`).MatchString(s.Run) {
					t.Errorf("%s: job %s runs go on ./test/... from the root: those packages are in the test module (go -C test ...)", name, job)
				}
				for _, m := range dirRe.FindAllStringSubmatch(s.Run, -1) {
					if m[1] == "dist" {
						continue // the release's output, made by an earlier step
					}
					if fi, err := os.Stat(filepath.Join(root, m[1])); err != nil || !fi.IsDir() {
						t.Errorf("%s: job %s changes into %q, which is not a directory of the repository", name, job, m[1])
					}
				}
			}
		}
	}
}
