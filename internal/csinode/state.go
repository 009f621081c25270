package csinode

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// record is what the plugin keeps on the node about one volume, enough to carry on after a
// restart: keep rotating a running pod's token, and revoke the token of a pod that ended while the
// plugin was down. It holds tokens: the state directory is root's alone (0700, files 0600), on the
// node, never in the API server; never log a record.
type record struct {
	VolumeID   string `json:"volumeID"`
	TargetPath string `json:"targetPath"`
	Pod        Pod    `json:"pod"`
	Spec       Spec   `json:"spec"`

	// Where the token came from, so that it can be revoked even when the issuer is gone.
	URL         string `json:"url"`
	Realm       string `json:"realm"`
	CABundle    []byte `json:"caBundle,omitempty"`
	ClientID    string `json:"clientID"`
	TrackingURI string `json:"trackingURI,omitempty"`

	AccessToken string    `json:"accessToken"`
	IssuedAt    time.Time `json:"issuedAt"`
	ExpiresAt   time.Time `json:"expiresAt"`

	// The pod's latest service-account token for the realm's audience (from the last publish or
	// republish): it authenticates rotations and the revocation.
	AssertionToken   string    `json:"assertion"`
	AssertionExpires time.Time `json:"assertionExpires"`

	// Unpublished: the pod has ended, the files are gone, the token waits for its revocation.
	Unpublished bool `json:"unpublished,omitempty"`
}

// stateDir stores one record per volume, as <dir>/<volumeID>.json.
type stateDir struct{ dir string }

func openState(dir string) (*stateDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	return &stateDir{dir: dir}, nil
}

func (s *stateDir) path(volumeID string) string { return filepath.Join(s.dir, volumeID+".json") }

// save writes rec atomically (a new file renamed over the old one).
func (s *stateDir) save(rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), s.path(rec.VolumeID))
}

func (s *stateDir) remove(volumeID string) error {
	if err := os.Remove(s.path(volumeID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// load reads every record; unreadable files are reported and left in place for a person.
func (s *stateDir) load() ([]*record, []error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []error{err}
	}
	var recs []*record
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			_ = os.Remove(filepath.Join(s.dir, name)) // a save interrupted by a crash
			continue
		}
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rec := &record{}
		if err := json.Unmarshal(b, rec); err != nil || rec.VolumeID+".json" != name {
			errs = append(errs, fmt.Errorf("state file %s does not parse", name))
			continue
		}
		recs = append(recs, rec)
	}
	return recs, errs
}
