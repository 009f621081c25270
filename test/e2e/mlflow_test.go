package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mlflowServer is `mlflow server --app-name oidc-auth` from the venv, on loopback, with sqlite
// stores in a temporary directory.
type mlflowServer struct {
	URL     string
	Dir     string
	LogPath string
	Env     []string // the OIDC_* settings it was started with (for the log and the docs)
	cmd     *exec.Cmd
	done    chan struct{}
}

// mlflowOIDCEnv is the mlflow-oidc-auth configuration of the test: bearer tokens are validated
// against Keycloak's keys (discovery URL), with issuer and audience pinned; the service account
// is provisioned on its first bearer request because its token's groups claim carries
// mlflow_users; members of mlflow_admins are admins (trusting the bearer token's groups claim).
func mlflowOIDCEnv(kcURL, mlflowURL, dir string) []string {
	issuer := kcURL + "/realms/" + realm
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	return []string{
		"OIDC_DISCOVERY_URL=" + issuer + "/.well-known/openid-configuration",
		"OIDC_ISSUER=" + issuer,
		"OIDC_AUDIENCE=" + audience,
		"OIDC_CLIENT_ID=" + serverClientID,
		"OIDC_CLIENT_SECRET=" + serverClientSecret,
		"OIDC_REDIRECT_URI=" + mlflowURL + "/callback",
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
	}
}

func startMLflow(ctx context.Context, kcURL string) (*mlflowServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mlflow-e2e-")
	if err != nil {
		return nil, err
	}
	s := &mlflowServer{
		URL:     "http://127.0.0.1:" + strconv.Itoa(port),
		Dir:     dir,
		LogPath: filepath.Join(dir, "mlflow-server.log"),
		done:    make(chan struct{}),
	}
	s.Env = mlflowOIDCEnv(kcURL, s.URL, dir)
	logFile, err := os.Create(s.LogPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(filepath.Join(venv, "bin", "mlflow"), "server",
		"--app-name", "oidc-auth",
		"--backend-store-uri", "sqlite:///"+filepath.Join(dir, "mlflow.db"),
		"--artifacts-destination", filepath.Join(dir, "artifacts"),
		"--host", "127.0.0.1", "--port", strconv.Itoa(port),
		"--workers", "1",
	)
	// cwd: mlflow-oidc-auth loads a .env from the working directory; give it an empty one.
	s.cmd.Dir = dir
	s.cmd.Env = append(cleanEnv(), s.Env...)
	s.cmd.Env = append(s.cmd.Env, "LOG_LEVEL=INFO")
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() { _ = s.cmd.Wait(); logFile.Close(); close(s.done) }()

	deadline := time.Now().Add(3 * time.Minute)
	hc := &http.Client{Timeout: 5 * time.Second}
	var last string
	for {
		select {
		case <-s.done:
			b, _ := os.ReadFile(s.LogPath)
			return nil, fmt.Errorf("mlflow server exited: %v\n%s", s.cmd.ProcessState, tail(string(b), 40))
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		default:
		}
		resp, err := hc.Get(s.URL + "/health/ready")
		if err == nil {
			body := readAllLimit(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
			last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			s.Stop()
			b, _ := os.ReadFile(s.LogPath)
			return nil, fmt.Errorf("mlflow server not ready after 3m (last: %s)\n%s", last, tail(string(b), 40))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Stop ends the server's process group and removes its directory.
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
	os.RemoveAll(s.Dir)
}

// cleanEnv is the test's environment without MLFLOW_* and OIDC_* variables.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MLFLOW_") || strings.HasPrefix(kv, "OIDC_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// mlflowCall sends one REST request with `Authorization: Bearer <token>` and returns the status
// and the body.
func mlflowCall(t *testing.T, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, mlflowSrv.URL+path, rd)
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
	return resp.StatusCode, readAllLimit(resp.Body)
}

// mustCall is mlflowCall that fails the test unless the status is 200 or 201.
func mustCall(t *testing.T, method, path, token string, body any) []byte {
	t.Helper()
	status, b := mlflowCall(t, method, path, token, body)
	if status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("%s %s: HTTP %d: %s", method, path, status, b)
	}
	return b
}

// adminToken gets a token for the realm's human admin (group mlflow_admins) by password grant
// at the MLflow server's own client.
func adminToken(t *testing.T) string {
	t.Helper()
	return realmToken(t, kcServer.URL(), "admin password grant", url.Values{
		"grant_type": {"password"}, "client_id": {serverClientID}, "client_secret": {serverClientSecret},
		"username": {adminUser}, "password": {adminPassword}, "scope": {"openid email profile"},
	})
}

// realmToken posts form to the realm's token endpoint at base and returns the access token.
func realmToken(t *testing.T, base, what string, form url.Values) string {
	t.Helper()
	resp, err := http.PostForm(base+"/realms/"+realm+"/protocol/openid-connect/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := readAllLimit(resp.Body)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("%s: HTTP %d: %s", what, resp.StatusCode, b)
	}
	return tok.AccessToken
}
