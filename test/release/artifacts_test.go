package release

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"debug/macho"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sversion "k8s.io/apimachinery/pkg/util/version"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// entry is one file of an archive.
type entry struct {
	hdr  *tar.Header
	data []byte
}

// readTar reads every entry of a tarball (gzip-compressed when gz), in order.
func readTar(t testing.TB, p string, gz bool) []entry {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if gz {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(p), err)
		}
		r = zr
	}
	var es []entry
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return es
		}
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(p), err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", filepath.Base(p), h.Name, err)
		}
		es = append(es, entry{h, data})
	}
}

func byName(es []entry) map[string][]byte {
	m := map[string][]byte{}
	for _, e := range es {
		m[e.hdr.Name] = e.data
	}
	return m
}

// --- the image -----------------------------------------------------------------------------------

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

type index struct {
	MediaType string       `json:"mediaType"`
	Manifests []descriptor `json:"manifests"`
}

// checkImage reads the image tarball as an OCI image layout: every blob matches its digest,
// index.json names the image vVERSION and points at an index for linux/amd64 and linux/arm64
// whose images are labelled with the version and the release's time. It returns the index's
// digest.
func checkImage(t *testing.T, r release) string {
	es := readTar(t, r.path(r.imageTar()), false)
	files := byName(es)
	blob := func(digest string) []byte {
		t.Helper()
		b, ok := files["blobs/"+strings.Replace(digest, ":", "/", 1)]
		if !ok {
			t.Fatalf("%s names %s, which the tarball does not hold", r.imageTar(), digest)
		}
		return b
	}
	for _, e := range es {
		if hex, ok := strings.CutPrefix(e.hdr.Name, "blobs/sha256/"); ok && e.hdr.Typeflag == tar.TypeReg {
			if got := sha256Hex(e.data); got != hex {
				t.Errorf("blob %s has sha256 %s", e.hdr.Name, got)
			}
		}
	}
	if _, ok := files["oci-layout"]; !ok {
		t.Error("no oci-layout file: not an OCI image layout")
	}
	var top index
	if err := json.Unmarshal(files["index.json"], &top); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(top.Manifests) != 1 {
		t.Fatalf("index.json lists %d images, want one", len(top.Manifests))
	}
	d := top.Manifests[0]
	if d.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("the image is a %s, want an OCI image index (two platforms)", d.MediaType)
	}
	if got, want := d.Annotations["io.containerd.image.name"], imageRepo+":v"+r.version; got != want {
		t.Errorf("the image is named %q, want %q", got, want)
	}
	if got := d.Annotations["org.opencontainers.image.ref.name"]; got != "v"+r.version {
		t.Errorf("org.opencontainers.image.ref.name %q, want v%s", got, r.version)
	}
	var idx index
	if err := json.Unmarshal(blob(d.Digest), &idx); err != nil {
		t.Fatalf("the image index: %v", err)
	}
	var platforms []string
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			t.Errorf("the index lists %s without a platform", m.Digest)
			continue
		}
		p := m.Platform.OS + "/" + m.Platform.Architecture
		platforms = append(platforms, p)
		var manifest struct {
			Config descriptor `json:"config"`
		}
		if err := json.Unmarshal(blob(m.Digest), &manifest); err != nil {
			t.Fatalf("the manifest for %s: %v", p, err)
		}
		var cfg struct {
			Created time.Time `json:"created"`
			Config  struct {
				User   string            `json:"User"`
				Labels map[string]string `json:"Labels"`
			} `json:"config"`
		}
		if err := json.Unmarshal(blob(manifest.Config.Digest), &cfg); err != nil {
			t.Fatalf("the config for %s: %v", p, err)
		}
		if got := cfg.Config.Labels["org.opencontainers.image.version"]; got != r.version {
			t.Errorf("%s: label org.opencontainers.image.version %q, want %s", p, got, r.version)
		}
		if !cfg.Created.Equal(r.epoch) {
			t.Errorf("%s: created %s, want the release's SOURCE_DATE_EPOCH %s", p, cfg.Created, r.epoch)
		}
		if cfg.Config.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532", p, cfg.Config.User)
		}
	}
	slices.Sort(platforms)
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(platforms, want) {
		t.Errorf("the index holds %v, want %v", platforms, want)
	}
	t.Logf("image %s:v%s, index %s", imageRepo, r.version, d.Digest)
	return d.Digest
}

// --- install.yaml and the chart ------------------------------------------------------------------

func decodeObjects(t testing.TB, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("decoding YAML: %v", err)
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}

// generatedCRDs are config/crd/bases, by name.
func generatedCRDs(t testing.TB) map[string]*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v): run make manifests", err)
	}
	crds := map[string]*unstructured.Unstructured{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range decodeObjects(t, data) {
			crds[o.GetName()] = o
		}
	}
	return crds
}

// checkCRDs: objs hold exactly the generated CRDs; with labelsAdded, metadata.labels and
// metadata.annotations may differ (the chart adds its own), everything else may not.
func checkCRDs(t *testing.T, what string, objs []*unstructured.Unstructured, labelsAdded bool) {
	t.Helper()
	want := generatedCRDs(t)
	got := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			got[o.GetName()] = o.DeepCopy()
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s has %d CRDs, config/crd/bases %d", what, len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s lacks the CRD %s", what, name)
			continue
		}
		w = w.DeepCopy()
		if labelsAdded {
			for _, o := range []*unstructured.Unstructured{g, w} {
				unstructured.RemoveNestedField(o.Object, "metadata", "labels")
				unstructured.RemoveNestedField(o.Object, "metadata", "annotations")
			}
		}
		if !reflect.DeepEqual(g.Object, w.Object) {
			t.Errorf("the CRD %s in %s differs from config/crd/bases", name, what)
		}
	}
}

// managerDeployment is the operator's Deployment among objs.
func managerDeployment(t *testing.T, what string, objs []*unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	var ds []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			ds = append(ds, o)
		}
	}
	if len(ds) != 1 {
		t.Fatalf("%s has %d Deployments, want one", what, len(ds))
	}
	return ds[0]
}

// checkDeployment: the manager container runs the image pinned by digest, and the Deployment
// says the release's version (what `kubectl mlflow-token version` reports).
func checkDeployment(t *testing.T, what string, d *unstructured.Unstructured, r release, digest string) {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	var image string
	for _, c := range containers {
		if m, ok := c.(map[string]any); ok && m["name"] == "manager" {
			image, _ = m["image"].(string)
		}
	}
	if want := imageRepo + "@" + digest; image != want {
		t.Errorf("%s: the manager runs %q, want %q (the image tarball's index)", what, image, want)
	}
	if got := d.GetLabels()["app.kubernetes.io/version"]; got != "v"+r.version {
		t.Errorf("%s: the Deployment's app.kubernetes.io/version is %q, want v%s", what, got, r.version)
	}
}

func checkInstaller(t *testing.T, r release, digest string) {
	data, err := os.ReadFile(r.path("install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeObjects(t, data)
	d := managerDeployment(t, "install.yaml", objs)
	checkDeployment(t, "install.yaml", d, r, digest)
	// build-installer labels the pods too (kubectl get pods -L app.kubernetes.io/version).
	podLabels, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "labels")
	if got := podLabels["app.kubernetes.io/version"]; got != "v"+r.version {
		t.Errorf("install.yaml: the pods' app.kubernetes.io/version is %q, want v%s", got, r.version)
	}
	checkCRDs(t, "install.yaml", objs, false)
}

// checkChart unpacks the chart: version and appVersion are the release's, its default image is
// pinned to the image's digest, its CRD files are config/crd/bases byte for byte; then Helm
// renders the packaged chart with its defaults, as `helm install` would.
func checkChart(t *testing.T, r release, digest string) {
	es := readTar(t, r.path(r.chartTgz()), true)
	files := map[string][]byte{}
	for _, e := range es {
		name, ok := strings.CutPrefix(e.hdr.Name, "mlflow-token-operator/")
		if !ok || e.hdr.Typeflag != tar.TypeReg {
			t.Errorf("chart entry %q (type %c): want regular files under mlflow-token-operator/", e.hdr.Name, e.hdr.Typeflag)
			continue
		}
		if !e.hdr.ModTime.Equal(r.epoch) || e.hdr.Uid != 0 || e.hdr.Gid != 0 {
			t.Errorf("chart entry %s: mtime %s, owner %d:%d; want %s, 0:0 (reproducible)", e.hdr.Name, e.hdr.ModTime.UTC(), e.hdr.Uid, e.hdr.Gid, r.epoch)
		}
		files[name] = e.data
	}
	var chart struct{ Name, Version, AppVersion string }
	if err := yaml.Unmarshal(files["Chart.yaml"], &chart); err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	if chart.Name != "mlflow-token-operator" || chart.Version != r.version || chart.AppVersion != "v"+r.version {
		t.Errorf("Chart.yaml: name %s, version %s, appVersion %s; want mlflow-token-operator, %s, v%s", chart.Name, chart.Version, chart.AppVersion, r.version, r.version)
	}
	var values struct {
		Image struct{ Repository, Tag, Digest string }
	}
	if err := yaml.Unmarshal(files["values.yaml"], &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	if values.Image.Repository != imageRepo || values.Image.Digest != digest || values.Image.Tag != "" {
		t.Errorf("values.yaml image %+v, want repository %s, digest %s, no tag (the release's image)", values.Image, imageRepo, digest)
	}
	if !bytes.Contains(files["README.md"], []byte("| `image.digest` | string | `\""+digest+"\"` |")) {
		t.Error("the chart's README does not show the pinned digest as image.digest's default")
	}
	// The CRDs as files, byte for byte.
	want := generatedCRDs(t)
	var crdFiles []string
	for name, data := range files {
		if base, ok := strings.CutPrefix(name, "files/crds/"); ok {
			crdFiles = append(crdFiles, base)
			if !bytes.Equal(data, readRepo(t, "config/crd/bases/"+base)) {
				t.Errorf("the chart's files/crds/%s differs from config/crd/bases/%s", base, base)
			}
		}
	}
	if len(crdFiles) != len(want) {
		t.Errorf("the chart has %d CRD files %v, config/crd/bases %d", len(crdFiles), crdFiles, len(want))
	}

	cmd := exec.Command(tool(t, "helm"), "template", "mlflow-token-operator", r.path(r.chartTgz()),
		"--namespace", "mlflow-token-operator-system")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", r.chartTgz(), err, stderr.String())
	}
	objs := decodeObjects(t, out)
	checkDeployment(t, "the chart", managerDeployment(t, "the chart", objs), r, digest)
	checkCRDs(t, "the chart", objs, true)
	checkChartCSIDriver(t, r, digest)
}

// checkChartCSIDriver: the released chart's CSI driver (csiDriver.enabled) runs the node plugin
// from the release's image, pinned by the same digest.
func checkChartCSIDriver(t *testing.T, r release, digest string) {
	cmd := exec.Command(tool(t, "helm"), "template", "mlflow-token-operator", r.path(r.chartTgz()), "--namespace", "mlflow-token-operator-system",
		"--set", "csiDriver.enabled=true", "--set", "csiDriver.tokenAudiences={https://keycloak.example.com/realms/mlflow}")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template with csiDriver.enabled: %v\n%s", err, stderr.String())
	}
	docs := strings.Split(string(out), "\n---")
	var ds string
	for _, d := range docs {
		if strings.Contains(d, "\nkind: DaemonSet\n") {
			ds = d
		}
	}
	switch {
	case !strings.Contains(string(out), "\nkind: CSIDriver\n"):
		t.Error("the chart with csiDriver.enabled renders no CSIDriver")
	case ds == "":
		t.Error("the chart with csiDriver.enabled renders no DaemonSet")
	case !strings.Contains(ds, `image: "`+imageRepo+"@"+digest+`"`) || !strings.Contains(ds, "- csi-node\n"):
		t.Errorf("the node plugin DaemonSet does not run `csi-node` of the release's image %s@%s:\n%s", imageRepo, digest, ds)
	}
}

// --- the kubectl plugin --------------------------------------------------------------------------

// checkPlugin: each archive holds the binary and LICENSE only, with fixed metadata; each binary
// is a static Go binary for its platform, built with -trimpath and the version stamped in; the
// one for this machine prints the version.
func checkPlugin(t *testing.T, r release) {
	license := readRepo(t, "LICENSE")
	host := "linux/" + runtime.GOARCH
	for _, platform := range pluginPlatforms {
		t.Run(platform, func(t *testing.T) {
			archive := r.pluginArchive(platform)
			es := readTar(t, r.path(archive), true)
			var names []string
			for _, e := range es {
				names = append(names, e.hdr.Name)
				if !e.hdr.ModTime.Equal(r.epoch) || e.hdr.Uid != 0 || e.hdr.Gid != 0 || e.hdr.Uname != "" || e.hdr.Gname != "" {
					t.Errorf("%s: %s has mtime %s, owner %d:%d (%s:%s); want %s, 0:0 without names", archive, e.hdr.Name,
						e.hdr.ModTime.UTC(), e.hdr.Uid, e.hdr.Gid, e.hdr.Uname, e.hdr.Gname, r.epoch)
				}
			}
			if want := []string{"LICENSE", pluginBin}; !slices.Equal(names, want) {
				t.Fatalf("%s holds %v, want %v in that order", archive, names, want)
			}
			lic, bin := es[0], es[1]
			if !bytes.Equal(lic.data, license) || lic.hdr.Mode != 0o644 {
				t.Errorf("%s: LICENSE (mode %o) is not the repository's LICENSE with mode 644", archive, lic.hdr.Mode)
			}
			if bin.hdr.Mode != 0o755 {
				t.Errorf("%s: %s has mode %o, want 755", archive, pluginBin, bin.hdr.Mode)
			}
			checkPluginBinary(t, platform, bin.data, r.version)
			if platform == host {
				exe := filepath.Join(t.TempDir(), pluginBin)
				if err := os.WriteFile(exe, bin.data, 0o755); err != nil {
					t.Fatal(err)
				}
				out, err := exec.Command(exe, "version", "--client", "-o", "json").Output()
				if err != nil {
					t.Fatalf("%s version --client: %v", pluginBin, err)
				}
				var info struct {
					Plugin struct{ Version, Platform string }
				}
				if err := json.Unmarshal(out, &info); err != nil {
					t.Fatalf("%s version -o json: %v\n%s", pluginBin, err, out)
				}
				if info.Plugin.Version != "v"+r.version || info.Plugin.Platform != platform {
					t.Errorf("%s version says %s on %s, want v%s on %s", pluginBin, info.Plugin.Version, info.Plugin.Platform, r.version, platform)
				}
			}
		})
	}
}

func checkPluginBinary(t *testing.T, platform string, data []byte, version string) {
	t.Helper()
	goos, goarch, _ := strings.Cut(platform, "/")
	bi, err := buildinfo.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s for %s is not a Go binary with build information: %v", pluginBin, platform, err)
	}
	if bi.Path != "github.com/mlflow-token-operator/mlflow-token-operator/cmd/kubectl-mlflow_token" {
		t.Errorf("built from %s, want the module's cmd/kubectl-mlflow_token", bi.Path)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"GOOS": goos, "GOARCH": goarch, "CGO_ENABLED": "0", "-trimpath": "true"} {
		if settings[k] != want {
			t.Errorf("%s for %s: build setting %s=%q, want %q", pluginBin, platform, k, settings[k], want)
		}
	}
	// With -trimpath the build information leaves -ldflags out, so the stamped version is looked
	// for in the binary's data (the test's made-up version appears nowhere else); the binary for
	// this machine is run and asked for it.
	if !bytes.Contains(data, []byte("v"+version)) {
		t.Errorf("%s for %s: the version v%s is not stamped in (-X main.version)", pluginBin, platform, version)
	}
	switch goos {
	case "linux":
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("not an ELF file: %v", err)
		}
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[goarch]
		if f.Machine != want {
			t.Errorf("ELF machine %s, want %s", f.Machine, want)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the binary has a program interpreter: it is not static")
			}
		}
	case "darwin":
		f, err := macho.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("not a Mach-O file: %v", err)
		}
		want := map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}[goarch]
		if f.Cpu != want {
			t.Errorf("Mach-O CPU %s, want %s", f.Cpu, want)
		}
	}
}

// --- the Krew manifest ---------------------------------------------------------------------------

// krewPlugin is Krew's index.Plugin (krew.googlecontainertools.github.com/v1alpha2).
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Homepage         string `json:"homepage"`
		Platforms        []struct {
			URI      string `json:"uri"`
			Sha256   string `json:"sha256"`
			Bin      string `json:"bin"`
			Selector *struct {
				MatchLabels      map[string]string `json:"matchLabels"`
				MatchExpressions []any             `json:"matchExpressions"`
			} `json:"selector"`
			Files []struct{ From, To string } `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

// checkKrew applies the rules of Krew's own validation (krew's internal/index/validation) to the
// manifest, checks that it lists each archive of the release at its download URL with the
// archive's sha256, and installs each archive as Krew would (extract, apply `files`, find `bin`).
func checkKrew(t *testing.T, r release) {
	data, err := os.ReadFile(r.path("mlflow-token.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p krewPlugin
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		t.Fatalf("mlflow-token.yaml: %v", err)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" {
		t.Errorf("apiVersion %s, kind %s: want krew.googlecontainertools.github.com/v1alpha2 Plugin", p.APIVersion, p.Kind)
	}
	// kubectl mlflow-token: Krew links kubectl-mlflow_token to the plugin's bin.
	if p.Metadata.Name != "mlflow-token" {
		t.Errorf("name %q, want mlflow-token", p.Metadata.Name)
	}
	if p.Spec.ShortDescription == "" || strings.ContainsAny(p.Spec.ShortDescription, "\r\n") || len(p.Spec.ShortDescription) > 80 {
		t.Errorf("shortDescription %q: want one non-empty line, short", p.Spec.ShortDescription)
	}
	if p.Spec.Description == "" || p.Spec.Caveats == "" || !strings.HasPrefix(p.Spec.Homepage, "https://") {
		t.Error("the manifest wants a description, caveats and an https homepage")
	}
	if p.Spec.Version != "v"+r.version {
		t.Errorf("version %s, want v%s", p.Spec.Version, r.version)
	}
	if _, err := k8sversion.ParseSemantic(p.Spec.Version); err != nil || !strings.HasPrefix(p.Spec.Version, "v") {
		t.Errorf("version %s: Krew wants v and a semantic version (%v)", p.Spec.Version, err)
	}
	var platforms []string
	for _, pl := range p.Spec.Platforms {
		if pl.Selector == nil || len(pl.Selector.MatchLabels) == 0 || len(pl.Selector.MatchExpressions) > 0 {
			t.Errorf("platform %s: want a selector with matchLabels os and arch", pl.URI)
			continue
		}
		for k := range pl.Selector.MatchLabels {
			if k != "os" && k != "arch" {
				t.Errorf("platform %s: selector key %q (Krew knows os and arch)", pl.URI, k)
			}
		}
		platform := pl.Selector.MatchLabels["os"] + "/" + pl.Selector.MatchLabels["arch"]
		platforms = append(platforms, platform)
		archive := r.pluginArchive(platform)
		if want := r.url + "/" + archive; pl.URI != want {
			t.Errorf("%s: uri %s, want %s", platform, pl.URI, want)
		}
		if !regexp.MustCompile(`^[a-f0-9]{64}$`).MatchString(pl.Sha256) {
			t.Errorf("%s: sha256 %q is not 64 lowercase hex digits", platform, pl.Sha256)
		}
		if _, err := os.Stat(r.path(archive)); err != nil {
			t.Errorf("%s: %v", platform, err)
			continue
		}
		if got := sha256File(t, r.path(archive)); pl.Sha256 != got {
			t.Errorf("%s: sha256 %s, the archive's is %s", platform, pl.Sha256, got)
		}
		if pl.Bin != pluginBin {
			t.Errorf("%s: bin %q, want %s", platform, pl.Bin, pluginBin)
		}
		krewInstall(t, r.path(archive), pl.Files, pl.Bin)
	}
	slices.Sort(platforms)
	want := slices.Clone(pluginPlatforms)
	slices.Sort(want)
	if !slices.Equal(platforms, want) {
		t.Errorf("the manifest's platforms %v, want %v", platforms, want)
	}
}

// krewInstall does what `kubectl krew install` does with an archive: extract it, move the
// `files` (a path or a glob) into the install folder, and expect `bin` there, executable; and the
// LICENSE beside it, as Krew's index asks.
func krewInstall(t *testing.T, archive string, ops []struct{ From, To string }, bin string) {
	t.Helper()
	if len(ops) == 0 {
		t.Errorf("%s: no files (Krew would take everything; the index wants them listed)", filepath.Base(archive))
		return
	}
	src, dst := t.TempDir(), t.TempDir()
	for _, e := range readTar(t, archive, true) {
		if err := os.WriteFile(filepath.Join(src, path.Clean(e.hdr.Name)), e.data, os.FileMode(e.hdr.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range ops {
		if op.From == "" || op.To == "" || op.To != path.Clean(op.To) {
			t.Errorf("files entry %+v: from and to must be set, to a clean path", op)
			continue
		}
		matches, _ := filepath.Glob(filepath.Join(src, filepath.FromSlash(op.From)))
		if len(matches) == 0 {
			t.Errorf("%s: files entry from %q matches nothing in the archive", filepath.Base(archive), op.From)
		}
		for _, m := range matches {
			to := filepath.Join(dst, filepath.FromSlash(op.To), filepath.Base(m))
			if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(m, to); err != nil {
				t.Fatal(err)
			}
		}
	}
	fi, err := os.Stat(filepath.Join(dst, filepath.FromSlash(bin)))
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("%s: after the file operations, bin %s is not an executable (%v)", filepath.Base(archive), bin, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "LICENSE")); err != nil {
		t.Errorf("%s: LICENSE is not installed: %v", filepath.Base(archive), err)
	}
}

// --- the Python plugin ---------------------------------------------------------------------------

// checkPython: the wheel and the sdist say the release's version (PEP 440), carry the license
// and the entry point MLflow loads the plugin by, and ship the source as it is in the repository.
func checkPython(t *testing.T, r release) {
	pyv := r.pyVersion()
	src := readRepo(t, "clients/python/src/mlflow_token_file_auth/__init__.py")
	license := readRepo(t, "LICENSE")

	zr, err := zip.OpenReader(r.path(r.wheel()))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		files[f.Name] = data
	}
	info := fmt.Sprintf("mlflow_token_file_auth-%s.dist-info/", pyv)
	metadata := string(files[info+"METADATA"])
	for _, want := range []string{"Name: mlflow-token-file-auth\n", "Version: " + pyv + "\n", "License-Expression: Apache-2.0\n", "License-File: LICENSE\n"} {
		if !strings.Contains(metadata, want) {
			t.Errorf("%s: METADATA lacks %q", r.wheel(), strings.TrimSpace(want))
		}
	}
	if !bytes.Equal(files[info+"licenses/LICENSE"], license) {
		t.Errorf("%s: %slicenses/LICENSE is not the repository's LICENSE", r.wheel(), info)
	}
	ep := string(files[info+"entry_points.txt"])
	if !regexp.MustCompile(`(?s)\[mlflow\.request_auth_provider\]\s*\ntoken-file = mlflow_token_file_auth:TokenFileAuthProvider`).MatchString(ep) {
		t.Errorf("%s: entry_points.txt lacks MLflow's token-file entry point:\n%s", r.wheel(), ep)
	}
	if !bytes.Equal(files["mlflow_token_file_auth/__init__.py"], src) {
		t.Errorf("%s: mlflow_token_file_auth/__init__.py is not clients/python's", r.wheel())
	}

	prefix := fmt.Sprintf("mlflow_token_file_auth-%s/", pyv)
	sd := map[string][]byte{}
	for _, e := range readTar(t, r.path(r.sdist()), true) {
		name, ok := strings.CutPrefix(e.hdr.Name, prefix)
		if !ok && e.hdr.Name != strings.TrimSuffix(prefix, "/") {
			t.Errorf("%s: entry %s outside %s", r.sdist(), e.hdr.Name, prefix)
		}
		sd[name] = e.data
	}
	if !strings.Contains(string(sd["PKG-INFO"]), "\nVersion: "+pyv+"\n") {
		t.Errorf("%s: PKG-INFO does not say Version: %s", r.sdist(), pyv)
	}
	if !regexp.MustCompile(`(?m)^version = "` + regexp.QuoteMeta(pyv) + `"$`).Match(sd["pyproject.toml"]) {
		t.Errorf("%s: pyproject.toml does not say version = %q", r.sdist(), pyv)
	}
	if !bytes.Equal(sd["LICENSE"], license) || !bytes.Equal(sd["src/mlflow_token_file_auth/__init__.py"], src) {
		t.Errorf("%s: LICENSE or src/mlflow_token_file_auth/__init__.py is not the repository's", r.sdist())
	}
}
