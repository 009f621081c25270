package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The archive is what `ctr images import` reads: an OCI layout whose index names the image, and
// whose blobs are addressed by their digests; the config's diff_id is the uncompressed layer's.
func TestWrite(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "img.tar")
	files := []File{{Path: "/usr/bin/probe", Mode: 0o755, Data: []byte("binary")}, {Path: "/etc/x", Mode: 0o644, Data: []byte("x")}}
	if err := Write(dst, "localhost/test/probe:v1", files, Config{Entrypoint: []string{"/usr/bin/probe"}, User: "65532:65532"}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		entries[h.Name] = data
	}
	for name, data := range entries {
		if hexDigest, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != hexDigest {
				t.Errorf("blob %s does not match its digest", name)
			}
		}
	}
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	mustJSON(t, entries["index.json"], &index)
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != "localhost/test/probe:v1" {
		t.Fatalf("index.json: %s", entries["index.json"])
	}
	var manifest struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	mustJSON(t, blob(t, entries, index.Manifests[0].Digest), &manifest)
	var config struct {
		Config struct {
			User       string
			Entrypoint []string
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	mustJSON(t, blob(t, entries, manifest.Config.Digest), &config)
	if config.Config.User != "65532:65532" || config.Config.Entrypoint[0] != "/usr/bin/probe" {
		t.Errorf("config: %+v", config.Config)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(t, entries, manifest.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	sum := sha256.Sum256(raw)
	if want := "sha256:" + hex.EncodeToString(sum[:]); len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != want {
		t.Errorf("diff_ids %v, want [%s]", config.RootFS.DiffIDs, want)
	}
	var names []string
	lr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	// Sorted by path, each directory before what it holds.
	if got, want := strings.Join(names, " "), "etc/ etc/x usr/ usr/bin/ usr/bin/probe"; got != want {
		t.Errorf("layer entries %q, want %q", got, want)
	}
}

func blob(t *testing.T, entries map[string][]byte, digest string) []byte {
	t.Helper()
	data, ok := entries["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("no blob %s", digest)
	}
	return data
}

func mustJSON(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
}
