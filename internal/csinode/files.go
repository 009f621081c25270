package csinode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The files a volume holds, the names the operator's Secret uses, so that the token-file plugin
// (clients/python) and everything written for the Secret read them unchanged.
const (
	FileToken       = "token"
	FileExpiresAt   = "expiresAt"
	FileTrackingURI = "MLFLOW_TRACKING_URI"
)

// dataLink is the symlink that names the current version, as in the kubelet's Secret volumes:
// <dir>/token -> ..data/token, ..data -> ..v<random>. Swapping ..data with a rename is atomic, so
// a reader sees the old set of files or the new one, never a mix or a half-written file.
const dataLink = "..data"

// publishFiles writes files into dir as one new version and makes it current. The files are
// world-readable (0644, as a Secret volume's default mode) because the pod's user is not known
// here; the directory above dir is the kubelet's and only root can enter it on the node.
func publishFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	version, err := os.MkdirTemp(dir, "..v")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(version)
		}
	}()
	if err := os.Chmod(version, 0o755); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(version, name), data, 0o644); err != nil {
			return err
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, dataLink))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		return err
	}
	ok = true
	// The visible names: created once, they follow ..data from then on. A name this version
	// lacks (a tracking URI removed from the issuer) goes.
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join(dataLink, name), link); err != nil {
				return err
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if name := e.Name(); !strings.HasPrefix(name, "..") {
			if _, keep := files[name]; !keep {
				_ = os.Remove(filepath.Join(dir, name))
			}
		}
	}
	if old != "" && old != filepath.Base(version) {
		return os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

// wipeFiles removes what publishFiles wrote into dir, and dir itself when it is then empty (the
// kubelet removes it otherwise). Anything else in dir is left alone and reported.
func wipeFiles(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var left []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ".."):
			err = os.RemoveAll(filepath.Join(dir, name))
		case slices.Contains([]string{FileToken, FileExpiresAt, FileTrackingURI}, name):
			err = os.Remove(filepath.Join(dir, name))
		default:
			left = append(left, name)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("%s holds files this driver did not write: %s", dir, strings.Join(left, ", "))
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// publishedToken reads back the token the volume's files hold now ("" when none).
func publishedToken(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, FileToken))
	if err != nil {
		return ""
	}
	return string(b)
}
