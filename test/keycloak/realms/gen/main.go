// Command gen writes the realm files the tests import from their one definition (package realms):
//
//	go -C test run ./keycloak/realms/gen
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak/realms"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

func main() {
	for _, r := range realms.All() {
		path := filepath.Join(testenv.RepoRoot(), r.Path)
		if err := os.WriteFile(path, r.JSON(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("wrote", r.Path)
	}
}
