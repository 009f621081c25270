package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// OCI annotation and label keys (image-spec annotations.md).
const (
	ociSource      = "org.opencontainers.image.source"
	ociRevision    = "org.opencontainers.image.revision"
	ociVersion     = "org.opencontainers.image.version"
	ociCreated     = "org.opencontainers.image.created"
	ociLicenses    = "org.opencontainers.image.licenses"
	ociTitle       = "org.opencontainers.image.title"
	ociDescription = "org.opencontainers.image.description"
)

// defaultPath is the PATH Docker gives a FROM scratch image, so `docker build` of the Dockerfile
// and this builder produce the same config.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// meta describes what every image of one build carries.
type meta struct {
	Title, Description string
	Source             string
	Version            string // e.g. v0.1.0
	Revision           string // git commit, or "unknown"
	Licenses           string
	Created            time.Time // SOURCE_DATE_EPOCH: the commit time
}

func (m meta) labels() map[string]string {
	l := map[string]string{
		ociTitle:       m.Title,
		ociDescription: m.Description,
		ociSource:      m.Source,
		ociVersion:     m.Version,
		ociRevision:    m.Revision,
		ociLicenses:    m.Licenses,
		ociCreated:     m.Created.UTC().Format(time.RFC3339),
	}
	for k, v := range l {
		if v == "" {
			delete(l, k)
		}
	}
	return l
}

// file is one entry of a layer built from memory or from a file on disk.
type file struct {
	Name string // path inside the image, without a leading slash
	Mode int64
	Src  string // read from this file ...
	Data []byte // ... or take these bytes
}

// layerFromFiles builds a gzip'd OCI layer holding files owned by root:root with the given modes
// and mtime epoch, in the given order, so that equal inputs give an equal digest. Each file's
// parent directories come first, mode 0755: runtimes create missing parents as they please
// (Docker 20.10 makes them 0600, unreadable for a non-root user).
func layerFromFiles(files []file, epoch time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		var parents []string
		for d := path.Dir(f.Name); d != "." && d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			h := &tar.Header{Name: d + "/", Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir}
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
		}
		data := f.Data
		if f.Src != "" {
			var err error
			if data, err = os.ReadFile(f.Src); err != nil {
				return nil, err
			}
		}
		h := &tar.Header{Name: f.Name, Mode: f.Mode, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer),
		tarball.WithCompressionLevel(gzip.DefaultCompression), // -9 saves 1 % for twice the time
		tarball.WithCompressedCaching,
	)
}

// layerFromTarFile wraps a tar (or tar.gz) file made by another tool (the training image's root
// filesystem) as an OCI layer.
func layerFromTarFile(p string) (v1.Layer, error) {
	return tarball.LayerFromFile(p, tarball.WithMediaType(types.OCILayer))
}

// step is one layer and the history entry that says where it came from.
type step struct {
	Layer     v1.Layer
	CreatedBy string
}

// newImage assembles an OCI image for platform p from layers and a runtime config. Every time in
// it is m.Created, so equal inputs give an equal digest.
func newImage(p v1.Platform, m meta, cfg v1.Config, steps []step) (v1.Image, error) {
	cfg.Labels = m.labels()
	if len(cfg.Env) == 0 {
		cfg.Env = []string{defaultPath}
	}
	created := v1.Time{Time: m.Created.UTC()}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: p.Architecture,
		Variant:      p.Variant,
		OS:           p.OS,
		Created:      created,
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	for _, s := range steps {
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     s.Layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: created, CreatedBy: s.CreatedBy, Comment: "hack/tools/image"},
		})
		if err != nil {
			return nil, err
		}
	}
	annotated, ok := mutate.Annotations(img, m.labels()).(v1.Image)
	if !ok {
		return nil, fmt.Errorf("annotating the image: unexpected type")
	}
	return annotated, nil
}

// newIndex gathers per-platform images into one OCI image index, annotated like each image.
func newIndex(m meta, imgs []v1.Image) (v1.ImageIndex, error) {
	adds := make([]mutate.IndexAddendum, 0, len(imgs))
	for _, img := range imgs {
		cfg, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: plainImage{img}, Descriptor: v1.Descriptor{Platform: cfg.Platform()}})
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	idx = mutate.AppendManifests(idx, adds...)
	annotated, ok := mutate.Annotations(idx, m.labels()).(v1.ImageIndex)
	if !ok {
		return nil, fmt.Errorf("annotating the index: unexpected type")
	}
	return annotated, nil
}

// plainImage is an image whose index entry has no artifactType. go-containerregistry fills it in
// from the config media type (image-spec 1.1 allows it), but tools that predate image-spec 1.1
// re-serialize the index without it: skopeo 1.9 (Debian 12) then pushes an index with another
// digest than the tarball's, or refuses with --preserve-digests. Docker and BuildKit write none.
type plainImage struct{ v1.Image }

// ArtifactType implements partial.Describable's optional artifact type: none.
func (plainImage) ArtifactType() (string, error) { return "", nil }
