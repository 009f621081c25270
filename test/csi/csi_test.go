package csi

import (
	"testing"
)

// TestCSI runs the suite's steps in order: later ones rely on what earlier ones leave (the
// training realm's MLflow user) and the last one searches the API server for everything the
// others did.
func TestCSI(t *testing.T) {
	steps := []struct {
		name string
		f    func(t *testing.T)
	}{
		{"job", testTrainingJob},
		{"identities", testIdentities},
		{"rotation", testRotation},
		{"revocation", testRevocation},
		{"figures", testFigures},
		{"apiserver", testNoTokenInAPIServer},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			t.Logf("step %s failed; the next steps run anyway", s.name)
		}
	}
}
