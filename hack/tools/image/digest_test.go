package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// TestArchiveDigest: `image-build digest` reports the digest of the image index a tarball holds,
// and refuses a tarball whose blobs do not match their names.
func TestArchiveDigest(t *testing.T) {
	dir := t.TempDir()
	ref, err := name.NewTag("registry.example.com/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	idx, err := random.Index(64, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	want, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.tar")
	if err := writeArchive(good, archive{Ref: ref, Index: idx, Epoch: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	got, err := archiveDigest(good)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("digest %s, want the index's %s", got, want)
	}

	// The same tarball with one byte of one blob changed.
	bad := filepath.Join(dir, "bad.tar")
	changed := false
	rewriteTar(t, good, bad, func(h *tar.Header, data []byte) []byte {
		if strings.HasPrefix(h.Name, "blobs/sha256/") && !changed && len(data) > 0 {
			data = bytes.Clone(data)
			data[0] ^= 0xff
			changed = true
		}
		return data
	})
	if _, err := archiveDigest(bad); err == nil || !strings.Contains(err.Error(), "has digest") {
		t.Errorf("a tarball with an altered blob: err = %v, want one naming the blob", err)
	}
	if _, err := archiveDigest(filepath.Join(dir, "missing.tar")); err == nil {
		t.Error("a missing file gave no error")
	}
}

// rewriteTar copies the tarball src to dst, passing each regular file's content through edit.
func rewriteTar(t *testing.T, src, dst string, edit func(*tar.Header, []byte) []byte) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out bytes.Buffer
	tr, tw := tar.NewReader(in), tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			data = edit(h, data)
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
