package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// digestCmd prints the digest of the one image (or image index) that an image tarball written by
// writeArchive names in its index.json: the digest a registry reports after `skopeo copy --all
// --preserve-digests`, and what `make release` pins install.yaml and the chart to.
func digestCmd(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: image-build digest FILE")
	}
	d, err := archiveDigest(args[0])
	if err != nil {
		return err
	}
	fmt.Println(d)
	return nil
}

// archiveDigest reads the tarball at p and returns the digest of its top-level descriptor. Every
// blob's content is checked against its name on the way, so a truncated or altered tarball is an
// error rather than a digest that no registry will ever serve.
func archiveDigest(p string) (v1.Hash, error) {
	f, err := os.Open(p)
	if err != nil {
		return v1.Hash{}, err
	}
	defer f.Close()
	var index []byte
	blobs := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return v1.Hash{}, fmt.Errorf("%s: %w", p, err)
		}
		switch {
		case h.Name == "index.json":
			if index, err = io.ReadAll(tr); err != nil {
				return v1.Hash{}, fmt.Errorf("%s: %w", p, err)
			}
		case strings.HasPrefix(h.Name, "blobs/sha256/") && h.Typeflag == tar.TypeReg:
			want := strings.TrimPrefix(h.Name, "blobs/sha256/")
			sum := sha256.New()
			if _, err := io.Copy(sum, tr); err != nil {
				return v1.Hash{}, fmt.Errorf("%s: %w", p, err)
			}
			if got := hex.EncodeToString(sum.Sum(nil)); got != want {
				return v1.Hash{}, fmt.Errorf("%s: blob %s has digest sha256:%s", p, h.Name, got)
			}
			blobs["sha256:"+want] = true
		}
	}
	if index == nil {
		return v1.Hash{}, fmt.Errorf("%s: no index.json: not an OCI image layout", p)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(index, &idx); err != nil {
		return v1.Hash{}, fmt.Errorf("%s: index.json: %w", p, err)
	}
	if len(idx.Manifests) != 1 {
		return v1.Hash{}, fmt.Errorf("%s: index.json lists %d images, want one", p, len(idx.Manifests))
	}
	d := idx.Manifests[0].Digest
	if !blobs[d.String()] {
		return v1.Hash{}, fmt.Errorf("%s: index.json names %s, which is not among its blobs", p, d)
	}
	return d, nil
}
