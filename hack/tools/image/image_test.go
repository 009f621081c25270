package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// These tests build the images the way `make image` / `make images` do (hack/images.sh) and
// check what a cluster, Docker and a registry will see. hack/test.sh runs them
// (`cd hack/tools/image && go test ./...`); `go test ./...` at the repository root does not
// descend into this module.

const operatorRepo = "ghcr.io/mlflow-token-operator/mlflow-token-operator"

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "hack", "images.sh")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

func version(t testing.TB) string {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// buildImages runs hack/images.sh for targets with IMAGES_DIR=dir ("" for bin/images) and returns
// the directory the tarballs are in.
func buildImages(t testing.TB, dir string, targets ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(t), "hack", "images.sh"), targets...)
	cmd.Dir = repoRoot(t)
	cmd.Env = os.Environ()
	if dir != "" {
		cmd.Env = append(cmd.Env, "IMAGES_DIR="+dir)
	} else {
		dir = filepath.Join(repoRoot(t), "bin", "images")
	}
	// VERSION and IMG from the caller's environment (make exports them) would change the names
	// this test expects: the defaults are what it checks.
	cmd.Env = slices.DeleteFunc(cmd.Env, func(e string) bool {
		return strings.HasPrefix(e, "VERSION=") || strings.HasPrefix(e, "IMG=") || strings.HasPrefix(e, "PLATFORMS=")
	})
	out, err := cmd.CombinedOutput()
	t.Logf("hack/images.sh %s:\n%s", strings.Join(targets, " "), out)
	if err != nil {
		t.Fatalf("hack/images.sh %s: %v", strings.Join(targets, " "), err)
	}
	return dir
}

// git runs git in the repository and returns its trimmed output.
func git(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// sourceDate is the time hack/images.sh stamps into the operator and pause images.
func sourceDate(t testing.TB) time.Time {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		s = git(t, "log", "-1", "--format=%ct")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(n, 0).UTC()
}

// extracted is an image tarball unpacked into a directory.
type extracted struct {
	tarPath string
	dir     string
	layout  layout.Path
	top     v1.Descriptor // the one entry of index.json
}

func extract(t testing.TB, tarPath string) extracted {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("tar", "-xf", tarPath, "-C", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("tar -xf %s: %v\n%s", tarPath, err, out)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("%s is not an OCI layout: %v", tarPath, err)
	}
	ii, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json has %d entries, want 1 (one named image)", len(im.Manifests))
	}
	return extracted{tarPath: tarPath, dir: dir, layout: lp, top: im.Manifests[0]}
}

// checkNamed checks the annotations that make `ctr images import` and Docker name the image.
func checkNamed(t testing.TB, e extracted, ref string) {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.top.Annotations[annotationContainerdName]; got != ref {
		t.Errorf("index.json %s = %q, want %q", annotationContainerdName, got, ref)
	}
	if got := e.top.Annotations[annotationRefName]; got != tag.TagStr() {
		t.Errorf("index.json %s = %q, want the tag %q", annotationRefName, got, tag.TagStr())
	}
}

// layerFiles lists the entries of an image's layers: name -> header.
func layerFiles(t testing.TB, img v1.Image) map[string]*tar.Header {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*tar.Header{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			files[path.Clean(strings.TrimPrefix(h.Name, "./"))] = h
		}
		rc.Close()
	}
	return files
}

// fileFromImage returns the content of one file of an image.
func fileFromImage(t testing.TB, img v1.Image, name string) []byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	found := false
	for _, l := range layers { // later layers win
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if path.Clean(strings.TrimPrefix(h.Name, "./")) == name {
				if data, err = io.ReadAll(tr); err != nil {
					t.Fatal(err)
				}
				found = true
			}
		}
		rc.Close()
	}
	if !found {
		t.Fatalf("%s is not in the image", name)
	}
	return data
}

func isShell(p string) bool {
	switch path.Base(p) {
	case "sh", "bash", "dash", "ash", "zsh", "busybox", "toybox":
		return true
	}
	return false
}

// checkStaticGoBinary checks that data is a statically linked executable for arch, built with the
// flags of goBuildArgs, and returns its build info.
func checkStaticGoBinary(t testing.TB, data []byte, arch string) *buildinfo.BuildInfo {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not an ELF file: %v", err)
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != want {
		t.Errorf("binary for %s is a %s ELF", arch, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("binary for %s is dynamically linked (has an interpreter)", arch)
		}
	}
	bi, err := buildinfo.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("no Go build info: %v", err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	// -ldflags is not recorded with -trimpath (it may hold paths): look at what -s -w do instead.
	for _, s := range f.Sections {
		if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug_") {
			t.Errorf("binary for %s is not stripped (section %s): want -ldflags=-s -w", arch, s.Name)
		}
	}
	for k, v := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "-tags": "grpcnotrace", "GOOS": "linux", "GOARCH": arch} {
		if settings[k] != v {
			t.Errorf("binary for %s: build setting %s = %q, want %q", arch, k, settings[k], v)
		}
	}
	if _, ok := settings["vcs.revision"]; ok {
		t.Errorf("binary for %s carries VCS info: want -buildvcs=false", arch)
	}
	return bi
}

func sha256File(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

func TestOperatorImage(t *testing.T) {
	ref := operatorRepo + ":v" + version(t)
	// Two builds of the same commit, into two directories: same index digest, same tarball.
	dirs := []string{t.TempDir(), t.TempDir()}
	for _, d := range dirs {
		buildImages(t, d, "operator")
	}
	a := extract(t, filepath.Join(dirs[0], "operator.tar"))
	b := extract(t, filepath.Join(dirs[1], "operator.tar"))
	t.Logf("index digest, build 1: %s", a.top.Digest)
	t.Logf("index digest, build 2: %s", b.top.Digest)
	if a.top.Digest != b.top.Digest {
		t.Errorf("two builds of one commit differ: index %s vs %s", a.top.Digest, b.top.Digest)
	}
	if x, y := sha256File(t, a.tarPath), sha256File(t, b.tarPath); x != y {
		t.Errorf("two builds of one commit differ: tarball sha256 %s vs %s", x, y)
	}

	checkNamed(t, a, ref)
	if a.top.MediaType != types.OCIImageIndex {
		t.Fatalf("index.json points to a %s, want an OCI image index", a.top.MediaType)
	}
	idx, err := a.layout.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	idx, err = idx.ImageIndex(a.top.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	created := sourceDate(t)
	wantLabels := map[string]string{
		ociSource:   "https://github.com/mlflow-token-operator/mlflow-token-operator",
		ociRevision: git(t, "rev-parse", "HEAD"),
		ociVersion:  version(t),
		ociCreated:  created.Format(time.RFC3339),
		ociLicenses: "Apache-2.0",
		ociTitle:    "mlflow-token-operator",
	}
	checkLabels := func(what string, got map[string]string) {
		t.Helper()
		for k, v := range wantLabels {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", what, k, got[k], v)
			}
		}
		if got[ociDescription] == "" {
			t.Errorf("%s: no %s", what, ociDescription)
		}
	}
	checkLabels("index annotations", im.Annotations)

	var platforms []string
	var hostConfig, hostDigest v1.Hash
	for _, d := range im.Manifests {
		if d.Platform == nil {
			t.Fatalf("index entry %s has no platform", d.Digest)
		}
		p := d.Platform.String()
		platforms = append(platforms, p)
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("%s: invalid image: %v", p, err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OS != d.Platform.OS || cfg.Architecture != d.Platform.Architecture {
			t.Errorf("%s: config says %s/%s", p, cfg.OS, cfg.Architecture)
		}
		if cfg.Config.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532 (numeric, non-root)", p, cfg.Config.User)
		}
		if !slices.Equal(cfg.Config.Entrypoint, []string{"/manager"}) || len(cfg.Config.Cmd) != 0 {
			t.Errorf("%s: entrypoint %q cmd %q, want [/manager] and none", p, cfg.Config.Entrypoint, cfg.Config.Cmd)
		}
		if !cfg.Created.Time.Equal(created) {
			t.Errorf("%s: created %s, want the commit time %s", p, cfg.Created.Time, created)
		}
		checkLabels(p+" labels", cfg.Config.Labels)
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		checkLabels(p+" manifest annotations", m.Annotations)

		// Nothing but the binary: no shell, no package manager, no /etc.
		files := layerFiles(t, img)
		var names []string
		for n, h := range files {
			names = append(names, n)
			if isShell(n) {
				t.Errorf("%s: the image has a shell: %s", p, n)
			}
			if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(created) {
				t.Errorf("%s: %s owned %d:%d, mtime %s; want 0:0 and the commit time", p, n, h.Uid, h.Gid, h.ModTime)
			}
		}
		if !slices.Equal(names, []string{"manager"}) {
			t.Errorf("%s: the layers hold %q, want only manager", p, names)
		}
		if h := files["manager"]; h != nil && h.Mode != 0o755 {
			t.Errorf("%s: /manager mode %o, want 755", p, h.Mode)
		}
		bin := fileFromImage(t, img, "manager")
		bi := checkStaticGoBinary(t, bin, d.Platform.Architecture)
		if !slices.ContainsFunc(bi.Deps, func(m *debug.Module) bool { return m.Path == "golang.org/x/crypto/x509roots/fallback" }) {
			t.Errorf("%s: the manager does not carry golang.org/x/crypto/x509roots/fallback: it would have no CA roots in an image without /etc/ssl", p)
		}
		if d.Platform.Architecture == runtime.GOARCH {
			hostConfig, _ = img.ConfigName()
			hostDigest = d.Digest
			// The entrypoint runs (flag parsing only: nothing else is reachable here).
			exe := filepath.Join(t.TempDir(), "manager")
			if err := os.WriteFile(exe, bin, 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(exe, "--help").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "-leader-elect") {
				t.Errorf("/manager --help: %v\n%s", err, out)
			}
		}
	}
	slices.Sort(platforms)
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("platforms %q, want linux/amd64 and linux/arm64", platforms)
	}

	// docker load (classic image store) reads manifest.json: go-containerregistry's reader of
	// that format finds this machine's image under the name, with all its layers.
	tag, _ := name.NewTag(ref)
	dimg, err := tarball.ImageFromPath(a.tarPath, &tag)
	if err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if err := validate.Image(dimg); err != nil {
		t.Errorf("the image manifest.json lists is invalid: %v", err)
	}
	if got, _ := dimg.ConfigName(); got != hostConfig {
		t.Errorf("manifest.json lists config %s, want this machine's platform's %s", got, hostConfig)
	}

	t.Run("the Dockerfile builds the same", func(t *testing.T) {
		df, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -buildvcs=false -tags=grpcnotrace -ldflags=\"-s -w\" -o manager ./cmd",
			"\nFROM scratch\n", "\nUSER 65532:65532\n", "\nENTRYPOINT [\"/manager\"]\n",
		} {
			if !strings.Contains(string(df), want) {
				t.Errorf("the Dockerfile has no %q: keep it in step with hack/tools/image", strings.TrimSpace(want))
			}
		}
		// `make docker-build-stage` runs the Dockerfile's build command without Docker: with the
		// same toolchain, the binary is the image's, byte for byte.
		cmd := exec.Command("make", "-s", "docker-build-stage")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make docker-build-stage: %v\n%s", err, out)
		}
		got, err := os.ReadFile(filepath.Join(repoRoot(t), "bin", "manager-static"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := idx.Image(hostDigest)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, fileFromImage(t, img, "manager")) {
			t.Error("make docker-build-stage built another binary than the image's /manager: the build flags differ")
		}
	})

	t.Run("skopeo copy --all oci-archive: to a registry", func(t *testing.T) {
		// The push command docs/images.md gives, with Debian's skopeo (unpacked, not installed).
		root := unpackDebs(t, "skopeo", "usr/bin/skopeo", "skopeo", "libgpgme11")
		srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
		defer srv.Close()
		u, _ := url.Parse(srv.URL)
		dst := u.Host + "/mlflow-token-operator/mlflow-token-operator:v" + version(t)
		policy := filepath.Join(t.TempDir(), "policy.json")
		if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(root, "usr", "bin", "skopeo"), "--policy", policy, "copy", "--all",
			"--preserve-digests", "--dest-tls-verify=false", "oci-archive:"+a.tarPath, "docker://"+dst)
		// skopeo links libgpgme, unpacked beside it (Debian's multiarch library directory).
		triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
		cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(root, "usr", "lib", triplet))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("skopeo copy: %v\n%s", err, out)
		}
		ref, err := name.NewTag(dst, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		pulled, err := remote.Index(ref)
		if err != nil {
			t.Fatalf("pull: %v", err)
		}
		if got, _ := pulled.Digest(); got != a.top.Digest {
			t.Errorf("skopeo pushed index %s, the tarball holds %s", got, a.top.Digest)
		}
		if err := validate.Index(pulled); err != nil {
			t.Errorf("pulled index: %v", err)
		}
	})

	t.Run("push and pull through a registry", func(t *testing.T) {
		srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
		defer srv.Close()
		u, _ := url.Parse(srv.URL)
		dst, err := name.NewTag(u.Host+"/mlflow-token-operator/mlflow-token-operator:v"+version(t), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		// What `crane push <extracted layout> REF` does with a layout whose one entry is an
		// index, and `skopeo copy --all oci-archive:...`: push that index, all platforms.
		if err := remote.WriteIndex(dst, idx); err != nil {
			t.Fatalf("push: %v", err)
		}
		pulled, err := remote.Index(dst)
		if err != nil {
			t.Fatalf("pull: %v", err)
		}
		got, err := pulled.Digest()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pushed %s, pulled %s", a.top.Digest, got)
		if got != a.top.Digest {
			t.Errorf("pulled index %s, pushed %s", got, a.top.Digest)
		}
		// Every blob comes back intact (validate re-reads and re-hashes them all).
		if err := validate.Index(pulled); err != nil {
			t.Errorf("pulled index: %v", err)
		}
		for _, p := range []string{"linux/amd64", "linux/arm64"} {
			pl, _ := v1.ParsePlatform(p)
			img, err := remote.Image(dst, remote.WithPlatform(*pl))
			if err != nil {
				t.Fatalf("pull %s: %v", p, err)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Architecture != pl.Architecture || cfg.Config.User != "65532:65532" {
				t.Errorf("pulled %s: %s, user %q", p, cfg.Architecture, cfg.Config.User)
			}
		}
	})
}

func TestPauseImage(t *testing.T) {
	ref := "localhost/mlflow-token-operator/pause:v" + version(t)
	dir := buildImages(t, t.TempDir(), "pause")
	e := extract(t, filepath.Join(dir, "pause.tar"))
	checkNamed(t, e, ref)
	if e.top.Platform == nil || e.top.Platform.Architecture != runtime.GOARCH {
		t.Errorf("index.json entry platform %v, want linux/%s", e.top.Platform, runtime.GOARCH)
	}
	img, err := e.layout.Image(e.top.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65535:65535" || !slices.Equal(cfg.Config.Entrypoint, []string{"/pause"}) {
		t.Errorf("user %q entrypoint %q, want 65535:65535 and [/pause]", cfg.Config.User, cfg.Config.Entrypoint)
	}
	files := layerFiles(t, img)
	if len(files) != 1 || files["pause"] == nil {
		t.Errorf("layers hold %d files, want only pause", len(files))
	}
	bin := fileFromImage(t, img, "pause")
	checkStaticGoBinary(t, bin, runtime.GOARCH)
	exe := filepath.Join(t.TempDir(), "pause")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []string{"TERM", "INT"} {
		t.Run("reaps orphans, exits 0 on SIG"+sig, func(t *testing.T) { checkPause(t, exe, sig) })
	}
}

// TestTokenwatchImage: the reader pod of `make run-local`, a static binary run as 65532 that
// prints a fingerprint of each new token in a file, never the token.
func TestTokenwatchImage(t *testing.T) {
	ref := "localhost/mlflow-token-operator/tokenwatch:v" + version(t)
	dir := buildImages(t, t.TempDir(), "tokenwatch")
	e := extract(t, filepath.Join(dir, "tokenwatch.tar"))
	checkNamed(t, e, ref)
	img, err := e.layout.Image(e.top.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != runtime.GOARCH || cfg.Config.User != "65532:65532" || !slices.Equal(cfg.Config.Entrypoint, []string{"/tokenwatch"}) {
		t.Errorf("%s, user %q, entrypoint %q; want %s, 65532:65532 and [/tokenwatch]", cfg.Architecture, cfg.Config.User, cfg.Config.Entrypoint, runtime.GOARCH)
	}
	if files := layerFiles(t, img); len(files) != 1 || files["tokenwatch"] == nil {
		t.Errorf("layers hold %d files, want only tokenwatch", len(files))
	}
	bin := fileFromImage(t, img, "tokenwatch")
	checkStaticGoBinary(t, bin, runtime.GOARCH)

	tmp := t.TempDir()
	exe, tokenFile := filepath.Join(tmp, "tokenwatch"), filepath.Join(tmp, "token")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	// Two JWT-shaped tokens; the kubelet replaces a Secret volume's files by renaming.
	tokens := []string{"eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE3OTYwMzI4MTd9.c2lnMQ", "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE3OTYwMzI4Mjd9.c2lnMg"}
	write := func(tok string) {
		if err := os.WriteFile(tokenFile+".new", []byte(tok), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tokenFile+".new", tokenFile); err != nil {
			t.Fatal(err)
		}
	}
	write(tokens[0])
	cmd := exec.Command(exe, "-every", "10ms", tokenFile)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitLines := func(n int) []string {
		deadline := time.Now().Add(10 * time.Second)
		for {
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) >= n && lines[0] != "" {
				return lines
			}
			if time.Now().After(deadline) {
				t.Fatalf("tokenwatch printed %q, want %d lines", out.String(), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLines(1)
	write(tokens[1])
	lines := waitLines(2)
	wantExp := []string{"2026-11-30T10:00:17Z", "2026-11-30T10:00:27Z"}
	for i, tok := range tokens {
		sum := sha256.Sum256([]byte(tok))
		f := strings.Fields(lines[i])
		if len(f) < 5 || f[1] != "token" || f[2] != fmt.Sprintf("sha256:%x", sum[:6]) || f[4] != wantExp[i] {
			t.Errorf("line %d: %q, want the fingerprint sha256:%x and expiry %s", i, lines[i], sum[:6], wantExp[i])
		}
		if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
			t.Errorf("line %d starts with %q, not a time: %v", i, f[0], err)
		}
		if strings.Contains(out.String(), strings.Split(tok, ".")[1]) {
			t.Errorf("tokenwatch printed (part of) the token: %q", out.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("tokenwatch after SIGTERM: %v, want exit 0", err)
	}
}

// lockedBuffer is a bytes.Buffer that a child process's output goroutine writes while the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// checkPause runs the pause binary as PID 1 of a new PID namespace, as in a pod that shares its
// process namespace, orphans a process into that namespace and checks that pause reaps it when it
// exits (a zombie would stay in /proc), then stops pause with sig.
func checkPause(t *testing.T, exe, sig string) {
	if os.Geteuid() != 0 {
		t.Fatal("the pause test needs root (it runs pause as PID 1 of a new PID namespace): run `make test` as root")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Fatal("nsenter is missing: apt-get install util-linux")
	}
	cmd := exec.Command(exe)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	pid := cmd.Process.Pid

	// nsenter forks a shell into pause's PID namespace; the shell starts `sleep 3` in the
	// background and exits, so sleep is reparented to the namespace's init: pause.
	out, err := exec.Command(nsenter, "--target", strconv.Itoa(pid), "--pid", "--", "/bin/sh", "-c", "sleep 3 >/dev/null 2>&1 </dev/null & exit 0").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v\n%s", err, out)
	}
	children := func() (all, zombies int) {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
			s := string(stat)
			fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
			if len(fields) < 2 || fields[1] != strconv.Itoa(pid) {
				continue
			}
			all++
			if fields[0] == "Z" {
				zombies++
			}
		}
		return all, zombies
	}
	if n, _ := children(); n != 1 {
		t.Fatalf("pause has %d children right after the orphaning, want 1 (the test's sleep)", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, z := children()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pause still has %d children (%d zombies) 10 s after the orphan's 3 s sleep: it does not reap", n, z)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if err := exec.Command("kill", "-"+sig, strconv.Itoa(pid)).Run(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("pause after SIG%s: %v (stderr %q), want exit 0", sig, err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("pause did not stop within 10 s of SIG%s", sig)
	}
}

func TestTrainingJobImage(t *testing.T) {
	ref := "localhost/mlflow-token-operator/training-job:v" + version(t)
	dir := buildImages(t, "", "training-job") // cached in bin/images: the build takes minutes cold
	e := extract(t, filepath.Join(dir, "training-job.tar"))
	checkNamed(t, e, ref)
	img, err := e.layout.Image(e.top.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img, validate.Fast); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != runtime.GOARCH || cfg.Config.User != "65532:65532" {
		t.Errorf("%s, user %q; want %s and 65532:65532", cfg.Architecture, cfg.Config.User, runtime.GOARCH)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/opt/venv/bin/python", "/app/training_job.py"}) {
		t.Errorf("entrypoint %q", cfg.Config.Entrypoint)
	}
	want, err := os.ReadFile(filepath.Join(repoRoot(t), "test", "e2e", "training_job.py"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fileFromImage(t, img, "app/training_job.py"); !bytes.Equal(got, want) {
		t.Error("/app/training_job.py differs from test/e2e/training_job.py")
	}
	files := layerFiles(t, img)
	// A non-root user must reach the script: its directory is in the layer, not left to the
	// runtime (Docker 20.10 creates missing parents 0600).
	if h := files["app"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode&0o755 != 0o755 {
		t.Errorf("/app is not a 0755 directory entry in the layers: %+v", h)
	}
	for _, f := range []string{"opt/venv/bin/python", "usr/bin/python3"} {
		if files[f] == nil {
			t.Errorf("no /%s in the image", f)
		}
	}
	var plugin, mlflow, pip bool
	for n := range files {
		if strings.HasPrefix(n, "opt/venv/lib/") {
			plugin = plugin || strings.HasSuffix(n, "/mlflow_token_file_auth/__init__.py")
			mlflow = mlflow || strings.HasSuffix(n, "/mlflow/__init__.py")
			pip = pip || strings.HasSuffix(n, "/pip/__init__.py")
		}
		if strings.HasPrefix(n, "dev/") {
			t.Errorf("device node or file under /dev in a layer: %s", n)
		}
	}
	if !plugin || !mlflow {
		t.Errorf("venv: plugin %v, mlflow %v; want both", plugin, mlflow)
	}
	if pip {
		t.Error("pip is still in the venv: the image runs jobs, it does not install packages")
	}
	sz, _ := img.Size()
	var total int64
	layers, _ := img.Layers()
	for _, l := range layers {
		s, _ := l.Size()
		total += s
	}
	t.Logf("training-job image: %d layers, %.1f MB compressed (manifest %d B)", len(layers), float64(total)/1e6, sz)
}
