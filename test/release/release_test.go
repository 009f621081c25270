// Package release tests the release artifacts of `make release` (hack/release.sh): it unpacks
// each one and checks that they agree with each other and with the source tree (one version
// everywhere, one image digest in the tarball, install.yaml and the chart, the Krew manifest's
// checksums, SHA256SUMS, the CRDs as generated).
//
// By default it builds a release of a made-up version (testVersion) into a temporary folder, so
// that a version copied from anywhere but VERSION cannot pass. With RELEASE_DIST=DIR it checks
// the artifacts already in DIR instead, for the version in $VERSION or the VERSION file (the
// release workflow runs it so on what it is about to publish).
//
// It needs bin/tools/helm and kustomize (hack/packaging-tools.sh) and bin/venv-release
// (`hack/release.sh tools`); hack/test.sh makes them. It fetches nothing itself: without them
// it fails and says which command makes them.
package release

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testVersion is what the test releases: a pre-release, so the SemVer to PEP 440 mapping is
// exercised too, with digits that appear nowhere else.
const testVersion = "9.8.7-rc.6"

// testEpoch is the SOURCE_DATE_EPOCH of the test's release (2023-11-14T22:13:20Z).
const testEpoch = 1700000000

const (
	imageRepo  = "ghcr.io/mlflow-token-operator/mlflow-token-operator"
	releaseURL = "https://github.com/mlflow-token-operator/mlflow-token-operator/releases/download/v"
	pluginBin  = "kubectl-mlflow_token"
)

var pluginPlatforms = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"}

// release is one set of artifacts and what they should say.
type release struct {
	dist    string
	version string    // SemVer without the v
	epoch   time.Time // SOURCE_DATE_EPOCH of the build
	url     string    // where the Krew manifest's archives are downloaded from
}

func (r release) pyVersion() string { return pep440(r.version) }

func (r release) path(name string) string { return filepath.Join(r.dist, name) }

func (r release) imageTar() string {
	return fmt.Sprintf("mlflow-token-operator-%s-image.tar", r.version)
}
func (r release) chartTgz() string { return fmt.Sprintf("mlflow-token-operator-%s.tgz", r.version) }
func (r release) wheel() string {
	return fmt.Sprintf("mlflow_token_file_auth-%s-py3-none-any.whl", r.pyVersion())
}
func (r release) sdist() string {
	return fmt.Sprintf("mlflow_token_file_auth-%s.tar.gz", r.pyVersion())
}
func (r release) pluginArchive(platform string) string {
	os, arch, _ := strings.Cut(platform, "/")
	return fmt.Sprintf("%s_%s_%s_%s.tar.gz", pluginBin, r.version, os, arch)
}

// artifacts are the files a release consists of, besides SHA256SUMS.
func (r release) artifacts() []string {
	a := []string{r.imageTar(), "install.yaml", r.chartTgz(), r.wheel(), r.sdist(), "mlflow-token.yaml"}
	for _, p := range pluginPlatforms {
		a = append(a, r.pluginArchive(p))
	}
	slices.Sort(a)
	return a
}

// pep440 is how Python spells a SemVer pre-release: 0.2.0-rc.1 is 0.2.0rc1.
func pep440(v string) string {
	return strings.NewReplacer("-alpha.", "a", "-beta.", "b", "-rc.", "rc").Replace(v)
}

func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func readRepo(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func repoVersion(t testing.TB) string {
	return strings.TrimSpace(string(readRepo(t, "VERSION")))
}

func tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "bin", "tools", name)
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s is missing (%v): run `hack/release.sh tools` (or the whole suite with `make test`)", p, err)
	}
	return p
}

// buildRelease runs hack/release.sh for testVersion into a temporary folder. The image goes to
// a folder of its own too, so bin/images/operator.tar (other suites' image) is left as it is.
func buildRelease(t *testing.T) release {
	t.Helper()
	tmp := t.TempDir()
	r := release{
		dist:    filepath.Join(tmp, "dist"),
		version: testVersion,
		epoch:   time.Unix(testEpoch, 0).UTC(),
		url:     releaseURL + testVersion,
	}
	cmd := exec.Command(filepath.Join(repoRoot(t), "hack", "release.sh"))
	cmd.Dir = repoRoot(t)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool {
		for _, k := range []string{"VERSION=", "IMG=", "DIST=", "IMAGES_DIR=", "RELEASE_URL=", "SOURCE_DATE_EPOCH=", "PLATFORMS=", "MAKEFLAGS=", "GOFLAGS="} {
			if strings.HasPrefix(e, k) {
				return true
			}
		}
		return false
	})
	cmd.Env = append(cmd.Env, "VERSION="+testVersion, "DIST="+r.dist, "IMAGES_DIR="+filepath.Join(tmp, "images"),
		"SOURCE_DATE_EPOCH="+strconv.Itoa(testEpoch),
		// Tests reach no registry: the tools and modules must be there already.
		"RELEASE_OFFLINE=1", "GOPROXY=off")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hack/release.sh: %v\n%s\n(needs bin/tools and bin/venv-release: run `hack/release.sh tools`, and Go modules: `go mod download`)", err, out)
	}
	t.Logf("hack/release.sh VERSION=%s took %s; its summary:\n%s", testVersion, time.Since(start).Round(time.Second), summary(out))
	return r
}

// summary is the tail of the release script's output, from the line listing what it wrote.
func summary(out []byte) string {
	if i := bytes.LastIndex(out, []byte("[release] wrote ")); i >= 0 {
		return string(out[i:])
	}
	return string(out)
}

// existingRelease is RELEASE_DIST, for the version in $VERSION or the VERSION file.
func existingRelease(t *testing.T, dist string) release {
	t.Helper()
	v := strings.TrimPrefix(os.Getenv("VERSION"), "v")
	if v == "" {
		v = repoVersion(t)
	}
	r := release{dist: dist, version: v, url: os.Getenv("RELEASE_URL")}
	if r.url == "" {
		r.url = releaseURL + v
	}
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		out, err := exec.Command("git", "-C", repoRoot(t), "log", "-1", "--format=%ct").Output()
		if err != nil {
			t.Fatalf("the commit time (SOURCE_DATE_EPOCH of the release): %v", err)
		}
		epoch = strings.TrimSpace(string(out))
	}
	n, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		t.Fatalf("SOURCE_DATE_EPOCH=%q: %v", epoch, err)
	}
	r.epoch = time.Unix(n, 0).UTC()
	return r
}

// TestRelease builds a release (or takes RELEASE_DIST) and checks each artifact and how they
// agree: the digest of the image tarball is the one install.yaml and the chart run; every
// version is the release's; the Krew manifest's checksums are the archives'; SHA256SUMS verifies.
func TestRelease(t *testing.T) {
	var r release
	if d := os.Getenv("RELEASE_DIST"); d != "" {
		r = existingRelease(t, d)
	} else {
		tool(t, "helm")
		tool(t, "kustomize")
		r = buildRelease(t)
	}
	t.Logf("checking the release %s in %s", r.version, r.dist)

	t.Run("SHA256SUMS", func(t *testing.T) { checkSums(t, r) })
	var digest string
	t.Run("image", func(t *testing.T) { digest = checkImage(t, r) })
	if digest == "" {
		t.Fatal("no image digest: the checks that compare against it cannot run")
	}
	t.Run("install.yaml", func(t *testing.T) { checkInstaller(t, r, digest) })
	t.Run("chart", func(t *testing.T) { checkChart(t, r, digest) })
	t.Run("kubectl plugin", func(t *testing.T) { checkPlugin(t, r) })
	t.Run("krew manifest", func(t *testing.T) { checkKrew(t, r) })
	t.Run("python", func(t *testing.T) { checkPython(t, r) })
}

// checkSums: SHA256SUMS lists exactly the release's artifacts, and each checksum holds.
func checkSums(t *testing.T, r release) {
	data, err := os.ReadFile(r.path("SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^([0-9a-f]{64})  ([^/\s]+)$`)
	var listed []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Errorf("SHA256SUMS: line %q is not `<sha256>  <file>` (sha256sum -c reads that)", sc.Text())
			continue
		}
		listed = append(listed, m[2])
		if got := sha256File(t, r.path(m[2])); got != m[1] {
			t.Errorf("SHA256SUMS says %s for %s, the file's is %s", m[1], m[2], got)
		}
	}
	slices.Sort(listed)
	if want := r.artifacts(); !slices.Equal(listed, want) {
		t.Errorf("SHA256SUMS lists\n  %v\nwant the release's artifacts\n  %v", listed, want)
	}
	// Everything in the folder is accounted for (only when the folder is the test's own: a
	// RELEASE_DIST may hold other files, such as build-installer's earlier output).
	if os.Getenv("RELEASE_DIST") == "" {
		entries, err := os.ReadDir(r.dist)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "SHA256SUMS" && !slices.Contains(listed, e.Name()) {
				t.Errorf("%s is in the release folder but not in SHA256SUMS", e.Name())
			}
		}
	}
	// sha256sum itself agrees (what a user runs).
	cmd := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
	cmd.Dir = r.dist
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum --check SHA256SUMS: %v\n%s", err, out)
	}
}

func sha256File(t testing.TB, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256Hex(data)
}

func sha256Hex(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// TestVersionsInStep: the version written in the source tree, outside VERSION, is VERSION's (a
// release stamps VERSION into every artifact, but these are what a build from a checkout says).
func TestVersionsInStep(t *testing.T) {
	v := repoVersion(t)
	if !regexp.MustCompile(`^\d+\.\d+\.\d+(-(alpha|beta|rc)\.\d+)?$`).MatchString(v) {
		t.Fatalf("VERSION %q: want X.Y.Z or X.Y.Z-(alpha|beta|rc).N (hack/release.sh accepts only those)", v)
	}
	checks := []struct{ file, re, want string }{
		{"clients/python/pyproject.toml", `(?m)^version = "([^"]*)"$`, pep440(v)},
		{"cmd/kubectl-mlflow_token/version.go", `(?m)^var version = "([^"]*)"$`, "v" + v},
		{"cmd/csinode.go", `(?m)^var version = "([^"]*)"$`, "v" + v},
		{"config/manager/kustomization.yaml", `(?m)^  newTag: (\S+)$`, "v" + v},
		{"charts/mlflow-token-operator/Chart.yaml", `(?m)^version: (\S+)$`, v},
		{"charts/mlflow-token-operator/Chart.yaml", `(?m)^appVersion: (\S+)$`, "v" + v},
	}
	for _, c := range checks {
		m := regexp.MustCompile(c.re).FindAllStringSubmatch(string(readRepo(t, c.file)), -1)
		switch {
		case len(m) != 1:
			t.Errorf("%s: %d matches of %s, want one", c.file, len(m), c.re)
		case m[0][1] != c.want:
			t.Errorf("%s says %s, want %s (VERSION is %s)", c.file, m[0][1], c.want, v)
		}
	}
}
