// Package ociimage writes a single-layer OCI image layout as a tar archive: enough to put a
// static binary into an image that `ctr -n k8s.io images import` (and so a node without a
// registry) accepts. It is for test images built on the fly (test/node's probe); the product's
// images are built by `make images`.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

// File is one regular file of the image's only layer.
type File struct {
	Path string // absolute path inside the image, e.g. /probe
	Mode int64  // e.g. 0o755
	Data []byte
}

// Config is the part of the image configuration a pod sees.
type Config struct {
	Entrypoint []string
	Cmd        []string
	User       string // numeric, e.g. "65532:65532", so runAsNonRoot can verify it
	Env        []string
}

// Write writes an OCI image layout tarball to dst naming the image ref
// (e.g. localhost/mlflow-token-operator/probe:dev).
func Write(dst, ref string, files []File, cfg Config) error {
	layer, diffID, err := layerTarGz(files)
	if err != nil {
		return err
	}
	created := time.Unix(0, 0).UTC()
	config, err := json.Marshal(map[string]any{
		"created":      created,
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": cfg.Entrypoint,
			"Cmd":        cfg.Cmd,
			"User":       cfg.User,
			"Env":        cfg.Env,
			"WorkingDir": "/",
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]any{{"created": created, "created_by": "test/node/ociimage"}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", config),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)},
	})
	if err != nil {
		return err
	}
	tag := ref[strings.LastIndex(ref, ":")+1:]
	mdesc := descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
	mdesc["annotations"] = map[string]string{
		"io.containerd.image.name":          ref, // the name ctr gives the imported image
		"org.opencontainers.image.ref.name": tag,
	}
	mdesc["platform"] = map[string]string{"architecture": runtime.GOARCH, "os": "linux"}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{mdesc},
	})
	if err != nil {
		return err
	}

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: created, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, e := range []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{"blobs/sha256/" + digestHex(config), config},
		{"blobs/sha256/" + digestHex(manifest), manifest},
		{"blobs/sha256/" + digestHex(layer), layer},
	} {
		if err := add(e.name, e.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, out.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func layerTarGz(files []File) (layer []byte, diffID string, err error) {
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	dirs := map[string]bool{}
	for _, f := range files {
		if !path.IsAbs(f.Path) {
			return nil, "", fmt.Errorf("image file path %q is not absolute", f.Path)
		}
		name := strings.TrimPrefix(path.Clean(f.Path), "/")
		var parents []string // outermost first: a layer lists a directory before its contents
		for d := path.Dir(name); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Name: d + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(0, 0)}); err != nil {
				return nil, "", err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: f.Mode, Size: int64(len(f.Data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	diffID = "sha256:" + digestHex(raw.Bytes())
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), diffID, nil
}

func descriptor(mediaType string, data []byte) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": "sha256:" + digestHex(data), "size": len(data)}
}

func digestHex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
