package realms

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// The realm files are what this package generates.
func TestFixturesAreGenerated(t *testing.T) {
	for _, r := range All() {
		got, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), r.Path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, r.JSON()) {
			t.Errorf("%s differs from its definition in test/keycloak/realms: run `go -C test run ./keycloak/realms/gen`", r.Path)
		}
	}
}
