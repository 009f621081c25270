package cluster

import (
	"context"
	"os"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/mlflowserver"
)

// startMLflow starts the real MLflow server on the node's host address (pods reach it by IP),
// with the artifact proxy (jobs upload checkpoints through it); Keycloak speaks HTTPS with the
// test's CA, which the server trusts.
func startMLflow(ctx context.Context, host, keycloakURL, caFile, logPath string) (*mlflowserver.Server, error) {
	return mlflowserver.Start(ctx, mlflowserver.Options{
		Venv: os.Getenv(EnvVenv), Host: host, Issuer: keycloakURL + "/realms/" + realmMLflow, Audience: audience,
		ClientID: serverClientID, ClientSecret: serverClientSecret, UsersGroup: usersGroup, AdminsGroup: adminsGroup,
		CAFile: caFile, ServeArtifacts: true, LogPath: logPath,
	})
}
