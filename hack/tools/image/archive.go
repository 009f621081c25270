package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Annotations on the top-level descriptor in index.json that name the image. containerd (ctr
// images import, and Docker with the containerd image store) reads io.containerd.image.name
// first; org.opencontainers.image.ref.name holds the tag alone, as the OCI image layout spec and
// `docker save` (Docker >= 25) write it, so `skopeo copy oci-archive:FILE:TAG` finds it too.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// archive is what one image tarball holds.
type archive struct {
	// Ref names the image (registry/repository:tag).
	Ref name.Tag
	// Index, for a multi-platform image; Image, for a single-platform one. Exactly one is set.
	Index v1.ImageIndex
	Image v1.Image
	// Docker is the image that the tarball's docker manifest.json lists (one platform: a
	// docker manifest.json has no platform field, and two entries with the same tag would load
	// both and leave the tag on the last).
	Docker v1.Image
	// Epoch is the modification time of every entry of the tarball.
	Epoch time.Time
}

// writeArchive writes a as one tarball at dst: an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) plus a docker manifest.json that points into the same blobs. That is the
// format `docker save` writes since Docker 25, and the one every consumer we need reads:
//   - `ctr images import` (containerd 1.6+) and Docker with the containerd image store read the
//     OCI layout and ignore manifest.json;
//   - `docker load` with the classic image store (the default before Docker 29, and every Docker
//     before 25) reads only manifest.json and the files it names;
//   - skopeo (oci-archive:) and crane (the extracted layout) read the OCI layout.
//
// The layout itself is written by go-containerregistry (layout.Write); this function only packs
// its directory into a tar with fixed metadata, so equal images give byte-identical tarballs.
func writeArchive(dst string, a archive) error {
	if (a.Index == nil) == (a.Image == nil) {
		return fmt.Errorf("writeArchive: exactly one of Index and Image must be set")
	}
	dir, err := os.MkdirTemp(filepath.Dir(dst), ".layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	named := layout.WithAnnotations(map[string]string{
		annotationContainerdName: a.Ref.Name(),
		annotationRefName:        a.Ref.TagStr(),
	})
	if a.Index != nil {
		err = lp.AppendIndex(a.Index, named)
	} else {
		cfg, cerr := a.Image.ConfigFile()
		if cerr != nil {
			return cerr
		}
		err = lp.AppendImage(a.Image, named, layout.WithPlatform(*cfg.Platform()))
	}
	if err != nil {
		return err
	}
	if a.Docker != nil {
		m, err := dockerManifest(a.Ref, a.Docker)
		if err != nil {
			return err
		}
		if err := lp.WriteFile("manifest.json", m, 0o644); err != nil {
			return err
		}
	}
	return tarDir(dir, dst, a.Epoch)
}

// dockerManifest is the manifest.json `docker load` reads, in go-containerregistry's own type for
// it, with the paths of the OCI layout's blobs (as `docker save` writes them since Docker 25).
func dockerManifest(ref name.Tag, img v1.Image) ([]byte, error) {
	cfg, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	d := tarball.Descriptor{Config: blobPath(cfg), RepoTags: []string{ref.String()}}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return nil, err
		}
		d.Layers = append(d.Layers, blobPath(h))
	}
	return json.Marshal(tarball.Manifest{d})
}

func blobPath(h v1.Hash) string { return path.Join("blobs", h.Algorithm, h.Hex) }

// tarDir packs the directory src into the tarball dst (written to a temporary file, then renamed,
// so a reader never sees half a tarball), in name order, with fixed owners, modes and mtimes.
func tarDir(src, dst string, epoch time.Time) error {
	var names []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == src {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)

	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	for _, n := range names {
		p := filepath.Join(src, filepath.FromSlash(n))
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: n, ModTime: epoch, Mode: 0o644, Typeflag: tar.TypeReg, Size: fi.Size()}
		if fi.IsDir() {
			h.Name, h.Mode, h.Typeflag, h.Size = n+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.IsDir() {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
