// Package mlflowserver runs a real MLflow tracking server behind mlflow-oidc-auth for the tests
// (`mlflow server --app-name oidc-auth` from the venv of hack/mlflow-venv.sh), configured as the
// docs tell platform teams to: bearer tokens are validated against Keycloak's keys (discovery
// URL) with issuer and audience pinned; a service account is provisioned at its first bearer
// request when its token's groups claim carries the users group; members of the admins group are
// admins (trusting the bearer token's groups claim). test/e2e runs it on loopback, test/cluster on
// the node's host address so that pods reach it.
package mlflowserver

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

	"github.com/mlflow-token-operator/mlflow-token-operator/test/internal/freeport"
)

// Options configure a server. Empty strings take the defaults given.
type Options struct {
	// Venv holds bin/mlflow (required).
	Venv string
	// Host is the address to listen on (default 127.0.0.1); Port 0 picks a free one.
	Host string
	Port int
	// Issuer is the realm's issuer URL (https://…/realms/<realm>); Audience the audience tokens must
	// carry; ClientID and ClientSecret the server's own client (its browser login).
	Issuer, Audience, ClientID, ClientSecret string
	// UsersGroup and AdminsGroup are the groups claim values of users and admins.
	UsersGroup, AdminsGroup string
	// CAFile, when set, is trusted for Keycloak (REQUESTS_CA_BUNDLE and SSL_CERT_FILE).
	CAFile string
	// ServeArtifacts enables the artifact proxy (--serve-artifacts), as jobs uploading checkpoints
	// through the tracking server need.
	ServeArtifacts bool
	// LogPath is the server's log (default <its directory>/mlflow-server.log, removed by Stop).
	LogPath string
	// ReadyTimeout bounds the wait for /health/ready (default 3 minutes).
	ReadyTimeout time.Duration
}

// Server is a running MLflow server.
type Server struct {
	URL     string
	Dir     string // sqlite stores and artifacts; removed by Stop
	LogPath string
	Env     []string // the OIDC_* settings it was started with (SECRET_KEY and client secret included: redact before printing)
	cmd     *exec.Cmd
	done    chan struct{}
}

// Start starts the server and waits until it answers /health/ready.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 3 * time.Minute
	}
	port := o.Port
	if port == 0 {
		var err error
		if port, err = freeport.On(o.Host); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "mlflow-server-")
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + net.JoinHostPort(o.Host, strconv.Itoa(port)), Dir: dir, LogPath: o.LogPath, done: make(chan struct{})}
	if s.LogPath == "" {
		s.LogPath = filepath.Join(dir, "mlflow-server.log")
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	s.Env = []string{
		"OIDC_DISCOVERY_URL=" + o.Issuer + "/.well-known/openid-configuration",
		"OIDC_ISSUER=" + o.Issuer,
		"OIDC_AUDIENCE=" + o.Audience,
		"OIDC_CLIENT_ID=" + o.ClientID,
		"OIDC_CLIENT_SECRET=" + o.ClientSecret,
		"OIDC_REDIRECT_URI=" + s.URL + "/callback",
		"OIDC_USERS_DB_URI=sqlite:///" + filepath.Join(dir, "auth.db"),
		"OIDC_GROUPS_ATTRIBUTE=groups",
		"OIDC_GROUP_NAME=" + o.UsersGroup,
		"OIDC_ADMIN_GROUP_NAME=" + o.AdminsGroup,
		"OIDC_USERNAME_FIELD=email,preferred_username",
		"OIDC_PROVISION_ON_BEARER_AUTH=true",
		"OIDC_TRUST_BEARER_GROUP_CLAIMS=true",
		"DEFAULT_MLFLOW_PERMISSION=NO_PERMISSIONS",
		"PERMISSION_CACHE_TTL_SECONDS=2",
		"SECRET_KEY=" + hex.EncodeToString(secret),
	}
	logFile, err := os.Create(s.LogPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := []string{"server", "--app-name", "oidc-auth",
		"--backend-store-uri", "sqlite:///" + filepath.Join(dir, "mlflow.db"),
		"--artifacts-destination", filepath.Join(dir, "artifacts"),
		"--host", o.Host, "--port", strconv.Itoa(port), "--workers", "1"}
	if o.ServeArtifacts {
		args = append(args, "--serve-artifacts")
	}
	s.cmd = exec.Command(filepath.Join(o.Venv, "bin", "mlflow"), args...)
	// mlflow-oidc-auth loads a .env from its working directory: give it an empty one.
	s.cmd.Dir = dir
	s.cmd.Env = append(append(CleanEnv(), s.Env...), "LOG_LEVEL=INFO")
	if o.CAFile != "" {
		s.cmd.Env = append(s.cmd.Env, "REQUESTS_CA_BUNDLE="+o.CAFile, "SSL_CERT_FILE="+o.CAFile)
	}
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { _ = s.cmd.Wait(); logFile.Close(); close(s.done) }()

	deadline := time.Now().Add(o.ReadyTimeout)
	hc := &http.Client{Timeout: 5 * time.Second}
	var last string
	for {
		select {
		case <-s.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("the MLflow server exited: %v\n%s", s.cmd.ProcessState, s.LogTail(40))
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("the MLflow server is not ready (last: %s): %w\n%s", last, ctx.Err(), s.LogTail(40))
		case <-time.After(500 * time.Millisecond):
		}
		resp, err := hc.Get(s.URL + "/health/ready")
		if err != nil {
			last = err.Error()
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
			last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, body)
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("the MLflow server is not ready after %s (last: %s)\n%s", o.ReadyTimeout, last, s.LogTail(40))
		}
	}
}

// Stop ends the server's process group and removes its directory (a LogPath outside it stays).
func (s *Server) Stop() {
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

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	b, _ := os.ReadFile(s.LogPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Call sends one REST request with `Authorization: Bearer <token>` (body, when not nil, as JSON)
// and returns the status and the body (at most 1 MiB).
func (s *Server) Call(t testing.TB, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
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

// MustCall is Call that fails the test unless the status is 200 or 201.
func (s *Server) MustCall(t testing.TB, method, path, token string, body any) []byte {
	t.Helper()
	status, b := s.Call(t, method, path, token, body)
	if status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("%s %s: HTTP %d: %s", method, path, status, b)
	}
	return b
}

// CleanEnv is this process's environment without MLFLOW_* and OIDC_* variables, for the server
// and for clients started next to it.
func CleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MLFLOW_") && !strings.HasPrefix(kv, "OIDC_") {
			out = append(out, kv)
		}
	}
	return out
}
