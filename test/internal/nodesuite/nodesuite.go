// Package nodesuite is what the suites on a real node (test/cluster, test/csi) share: the one-line
// preflight that names what is missing and the command that provides it, and the log of step
// times and figures each prints at its end.
package nodesuite

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// Image is an image tarball of bin/images and the reference it is imported under.
type Image struct {
	File string // in bin/images
	Ref  string
	Make string // the command that builds it
}

// Preflight checks what a node suite needs (root and the node's packages, Keycloak, the MLflow
// virtualenv, the tools of bin/tools named, the images) and returns the images to import, in
// order: the sandbox image first. Its error is one line that says what to run.
func Preflight(images []Image, tools ...string) ([]node.Image, error) {
	if err := node.Preflight(node.Options{BinDir: os.Getenv("KUBEBUILDER_ASSETS")}); err != nil {
		return nil, fmt.Errorf("the node cannot run on this machine: %w", err)
	}
	if keycloak.HomeFromEnv() == "" {
		return nil, errors.New("KEYCLOAK_HOME is not set: run the tests with `make test` (hack/keycloak.sh installs Keycloak)")
	}
	venv := os.Getenv("MLFLOW_VENV")
	if venv == "" {
		return nil, errors.New("MLFLOW_VENV is not set: run the tests with `make test` (hack/mlflow-venv.sh builds the MLflow virtualenv)")
	}
	if _, err := os.Stat(filepath.Join(venv, "bin", "mlflow")); err != nil {
		return nil, fmt.Errorf("MLFLOW_VENV=%s has no bin/mlflow: run hack/mlflow-venv.sh", venv)
	}
	root := testenv.RepoRoot()
	for _, tool := range tools {
		if p := filepath.Join(root, "bin", "tools", tool); !exists(p) {
			return nil, fmt.Errorf("%s is missing: run hack/packaging-tools.sh (or the tests with `make test`)", p)
		}
	}
	var out []node.Image
	for _, img := range images {
		p := filepath.Join(root, "bin", "images", img.File)
		if !exists(p) {
			return nil, fmt.Errorf("image %s is missing (%s): run `%s` (or the tests with `make test`)", img.Ref, p, img.Make)
		}
		out = append(out, node.Image{Path: p, Ref: img.Ref})
	}
	return out, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Log collects a suite's step times and figures as they happen (printed at once, so that a
// verbose run shows them in place) and prints them together at the end.
type Log struct {
	mu      sync.Mutex
	steps   []string
	figures []string
}

// Step records how long a step took.
func (l *Log) Step(name string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.steps = append(l.steps, fmt.Sprintf("  %-76s %8s", name, d.Round(100*time.Millisecond)))
	fmt.Printf("[time] %s: %s\n", name, d.Round(100*time.Millisecond))
}

// Timed runs f and records its duration as a step.
func (l *Log) Timed(name string, f func()) {
	t := time.Now()
	f()
	l.Step(name, time.Since(t))
}

// Figure records a measured figure.
func (l *Log) Figure(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := fmt.Sprintf(format, a...)
	l.figures = append(l.figures, "  "+line)
	fmt.Printf("[figure] %s\n", line)
}

// Print writes the steps and figures of the suite named.
func (l *Log) Print(w io.Writer, suite string, total time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.steps) > 0 {
		fmt.Fprintf(w, "Steps of the %s suite (wall clock, %s in all):\n%s\n", suite, total.Round(time.Second), strings.Join(l.steps, "\n"))
	}
	if len(l.figures) > 0 {
		fmt.Fprintf(w, "Figures of the %s suite (%s in all):\n%s\n", suite, total.Round(time.Second), strings.Join(l.figures, "\n"))
	}
}
