package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mlflowServer is `mlflow server --app-name oidc-auth` from the venv, on the node's HostIP (pods
// reach it by IP), with sqlite stores and the artifact proxy (--serve-artifacts) writing to a
// temporary directory.
type mlflowServer struct {
	URL     string
	LogPath string
	dir     string
	cmd     *exec.Cmd
	done    chan struct{}
}

// startMLflow starts the server with the mlflow-oidc-auth settings of test/e2e: bearer tokens
// validated against Keycloak's keys with issuer and audience pinned, service accounts provisioned
// at their first request by their groups claim (mlflow_users), admins by mlflow_admins. Keycloak
// speaks HTTPS with the test's CA, which the server trusts through REQUESTS_CA_BUNDLE.
func startMLflow(ctx context.Context, host, keycloakURL, caFile, logPath string) (*mlflowServer, error) {
	port, err := freePort(host)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cluster-mlflow-")
	if err != nil {
		return nil, err
	}
	s := &mlflowServer{
		URL:     "http://" + net.JoinHostPort(host, strconv.Itoa(port)),
		LogPath: logPath,
		dir:     dir,
		done:    make(chan struct{}),
	}
	issuer := keycloakURL + "/realms/" + realmMLflow
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	env := []string{
		"OIDC_DISCOVERY_URL=" + issuer + "/.well-known/openid-configuration",
		"OIDC_ISSUER=" + issuer,
		"OIDC_AUDIENCE=" + audience,
		"OIDC_CLIENT_ID=" + serverClientID,
		"OIDC_CLIENT_SECRET=" + serverClientSecret,
		"OIDC_REDIRECT_URI=" + s.URL + "/callback",
		"OIDC_USERS_DB_URI=sqlite:///" + filepath.Join(dir, "auth.db"),
		"OIDC_GROUPS_ATTRIBUTE=groups",
		"OIDC_GROUP_NAME=" + usersGroup,
		"OIDC_ADMIN_GROUP_NAME=" + adminsGroup,
		"OIDC_USERNAME_FIELD=email,preferred_username",
		"OIDC_PROVISION_ON_BEARER_AUTH=true",
		"OIDC_TRUST_BEARER_GROUP_CLAIMS=true",
		"DEFAULT_MLFLOW_PERMISSION=NO_PERMISSIONS",
		"PERMISSION_CACHE_TTL_SECONDS=2",
		"SECRET_KEY=" + hex.EncodeToString(secret),
		"REQUESTS_CA_BUNDLE=" + caFile,
		"SSL_CERT_FILE=" + caFile,
		"LOG_LEVEL=INFO",
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(filepath.Join(os.Getenv(EnvVenv), "bin", "mlflow"), "server",
		"--app-name", "oidc-auth",
		"--backend-store-uri", "sqlite:///"+filepath.Join(dir, "mlflow.db"),
		"--serve-artifacts", "--artifacts-destination", filepath.Join(dir, "artifacts"),
		"--host", host, "--port", strconv.Itoa(port),
		"--workers", "1",
	)
	s.cmd.Dir = dir // mlflow-oidc-auth reads a .env from its working directory: an empty one
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MLFLOW_") && !strings.HasPrefix(kv, "OIDC_") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	s.cmd.Env = append(s.cmd.Env, env...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { _ = s.cmd.Wait(); logFile.Close(); close(s.done) }()

	hc := &http.Client{Timeout: 5 * time.Second}
	var last string
	for {
		select {
		case <-s.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("the MLflow server exited: %v\n%s", s.cmd.ProcessState, tailFile(logPath, 40))
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("the MLflow server is not ready (last: %s): %w\n%s", last, ctx.Err(), tailFile(logPath, 40))
		case <-time.After(500 * time.Millisecond):
		}
		resp, err := hc.Get(s.URL + "/health/ready")
		if err != nil {
			last = err.Error()
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return s, nil
		}
		last = resp.Status
	}
}

// Stop ends the server's process group and removes its directory (the log stays).
func (s *mlflowServer) Stop() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	}
	os.RemoveAll(s.dir)
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	return lastLines(string(b), n)
}

// mlflowCall sends one REST request to the MLflow server with `Authorization: Bearer <token>`
// and returns the status and the body.
func mlflowCall(t testing.TB, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, mlflow.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b
}

// mustCall is mlflowCall that fails the test unless the answer is 200 or 201.
func mustCall(t testing.TB, method, path, token string, body any) []byte {
	t.Helper()
	status, b := mlflowCall(t, method, path, token, body)
	if status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("%s %s: HTTP %d: %s", method, path, status, b)
	}
	return b
}
