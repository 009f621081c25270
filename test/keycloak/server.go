// Package keycloak runs a real Keycloak server (the Quarkus distribution unpacked by
// `hack/keycloak.sh install`) as a child process for integration tests.
//
// Each Server gets its own directory: a "home" made of symlinks to the shared distribution
// (bin/kc.sh is copied so that kc.sh resolves its home to this directory) plus a private data/
// directory holding the H2 database, the realm import directory and Keycloak's tmp files. The
// distribution itself is never written to when it was built by hack/keycloak.sh (the server is
// started with `start --optimized`), so several Servers may run side by side.
//
// Only the standard library is used. On Linux a Keycloak dies with the process that started it
// (a parent-death signal); elsewhere only Close stops it.
//
// Typical use:
//
//	srv, err := keycloak.Start(ctx, keycloak.Options{
//		Home:       keycloak.HomeFromEnv(),
//		RealmFiles: []string{"test/keycloak/realm-mlflow.json"},
//	})
//	if err != nil { t.Fatal(err) }
//	t.Cleanup(srv.Close)
//	issuer := srv.URL() + "/realms/mlflow"
package keycloak

import (
	"archive/zip"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/internal/freeport"
)

// Environment variables read by this package.
const (
	// EnvHome is the Keycloak distribution directory (printed by `hack/keycloak.sh install`).
	EnvHome = "KEYCLOAK_HOME"
	// EnvJavaHome optionally selects the JDK that runs Keycloak.
	EnvJavaHome = "KEYCLOAK_JAVA_HOME"
)

const (
	// DefaultStartTimeout bounds Start and Restart when ctx has no deadline.
	DefaultStartTimeout = 5 * time.Minute
	// StopGracePeriod is how long Stop waits after SIGTERM before sending SIGKILL.
	StopGracePeriod = 20 * time.Second
	// logTailLines is how many lines of the server log are quoted in errors.
	logTailLines = 40

	defaultHost          = "127.0.0.1"
	defaultAdminUser     = "admin"
	defaultAdminPassword = "admin"
	// defaultJavaOptsAppend makes the JVM use only the C1 compiler: on a 2-core machine this
	// starts Keycloak ~30% faster and uses ~100 MB less RSS; throughput is irrelevant for tests.
	// A JAVA_OPTS_APPEND set in the environment replaces it.
	defaultJavaOptsAppend = "-XX:TieredStopAtLevel=1"
)

// Options configures a Server. Zero values pick defaults.
type Options struct {
	// Home is the unpacked Keycloak distribution (default: $KEYCLOAK_HOME).
	Home string
	// JavaHome is the JDK used to run Keycloak (default: $KEYCLOAK_JAVA_HOME, else the newest
	// /usr/lib/jvm/temurin-25*, else $JAVA_HOME, else `java` on PATH).
	JavaHome string
	// Host is the HTTP bind address and the host of URL() (default 127.0.0.1). Tokens' `iss`
	// carries the host used in requests, so keep using URL() everywhere.
	Host string
	// Port is the HTTP port (0 = pick a free port). Kept across Restart.
	Port int
	// ManagementPort serves /health/ready (0 = pick a free port). Kept across Restart.
	ManagementPort int
	// RealmFiles are realm JSON files imported at first start (a realm that already exists is
	// skipped, so Restart keeps the realm state).
	RealmFiles []string
	// AdminUser and AdminPassword are the master-realm bootstrap admin (default admin/admin).
	AdminUser, AdminPassword string
	// TLSCertFile and TLSKeyFile (PEM) turn on HTTPS on HTTPSPort, next to plain HTTP; the
	// management interface stays on HTTP.
	TLSCertFile, TLSKeyFile string
	// HTTPSPort is the HTTPS port when TLS files are given (0 = pick a free port).
	HTTPSPort int
	// LogFile receives the server's stdout and stderr (appended). Default: keycloak.log in the
	// server's temporary directory (removed by Close).
	LogFile string
	// TruststorePaths are PEM or PKCS#12 files (or directories of them) whose certificates
	// Keycloak trusts for its outgoing TLS connections, next to the JDK's default CAs
	// (--truststore-paths; read once, at start). Example: the CA of a Kubernetes API server whose
	// service-account issuer a Kubernetes identity provider fetches keys from.
	TruststorePaths []string
}

// Server is a running (or stopped) Keycloak process with its own data directory.
type Server struct {
	opts      Options
	dir       string   // per-server home: symlinks to Home + private data/
	realms    []string // realm names from RealmFiles, checked for readiness
	optimized bool     // distribution was built by hack/keycloak.sh → start --optimized
	logPath   string

	mu      sync.Mutex
	running *process
}

type process struct {
	cmd     *exec.Cmd
	pgid    int
	logFile *os.File
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done is closed
}

// HomeFromEnv returns $KEYCLOAK_HOME (empty when unset).
func HomeFromEnv() string { return os.Getenv(EnvHome) }

// Start prepares a fresh data directory, launches Keycloak, imports opts.RealmFiles and waits
// until /health/ready answers 200 and every imported realm's OIDC discovery document is served.
// If ctx has no deadline, DefaultStartTimeout applies. On failure nothing is left running and
// the error quotes the end of the server log.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Home == "" {
		opts.Home = HomeFromEnv()
	}
	if opts.Home == "" {
		return nil, fmt.Errorf("keycloak: no distribution: set Options.Home or $%s (run hack/keycloak.sh install)", EnvHome)
	}
	home, err := filepath.Abs(opts.Home)
	if err != nil {
		return nil, fmt.Errorf("keycloak: %w", err)
	}
	opts.Home = home
	if _, err := os.Stat(filepath.Join(home, "bin", "kc.sh")); err != nil {
		return nil, fmt.Errorf("keycloak: %s is not a Keycloak distribution (no bin/kc.sh): %w", home, err)
	}
	if opts.JavaHome == "" {
		opts.JavaHome = defaultJavaHome()
	}
	// Keycloak runs in its own directory: relative paths would resolve there.
	opts.TruststorePaths = append([]string(nil), opts.TruststorePaths...)
	for i, p := range opts.TruststorePaths {
		if opts.TruststorePaths[i], err = filepath.Abs(p); err != nil {
			return nil, fmt.Errorf("keycloak: truststore path: %w", err)
		}
	}
	if opts.Host == "" {
		opts.Host = defaultHost
	}
	if opts.AdminUser == "" {
		opts.AdminUser = defaultAdminUser
	}
	if opts.AdminPassword == "" {
		opts.AdminPassword = defaultAdminPassword
	}
	if opts.Port == 0 {
		if opts.Port, err = freePort(opts.Host); err != nil {
			return nil, err
		}
	}
	if opts.ManagementPort == 0 {
		for opts.ManagementPort == 0 || opts.ManagementPort == opts.Port {
			if opts.ManagementPort, err = freePort(opts.Host); err != nil {
				return nil, err
			}
		}
	}
	if opts.TLSCertFile != "" && opts.HTTPSPort == 0 {
		for opts.HTTPSPort == 0 || opts.HTTPSPort == opts.Port || opts.HTTPSPort == opts.ManagementPort {
			if opts.HTTPSPort, err = freePort(opts.Host); err != nil {
				return nil, err
			}
		}
	}

	dir, err := os.MkdirTemp("", "keycloak-server-")
	if err != nil {
		return nil, fmt.Errorf("keycloak: %w", err)
	}
	s := &Server{opts: opts, dir: dir, optimized: builtForTests(home)}
	s.logPath = opts.LogFile
	if s.logPath == "" {
		s.logPath = filepath.Join(dir, "keycloak.log")
	}
	if err := s.prepareDir(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.startAndWait(ctx, "start"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// URL is the base URL, e.g. http://127.0.0.1:34567 (issuer of realm r: URL()+"/realms/"+r).
func (s *Server) URL() string {
	return "http://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port))
}

// HTTPSURL is the HTTPS base URL (empty without TLS files). Tokens requested through it carry
// it as their issuer.
func (s *Server) HTTPSURL() string {
	if s.opts.TLSCertFile == "" {
		return ""
	}
	return "https://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.HTTPSPort))
}

// ManagementURL is the base URL of the management interface (/health, /health/ready).
func (s *Server) ManagementURL() string {
	return "http://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.ManagementPort))
}

// Options returns the effective options (ports, admin credentials, paths resolved).
func (s *Server) Options() Options { return s.opts }

// LogPath is the file receiving the server's output.
func (s *Server) LogPath() string { return s.logPath }

// Dir is the server's private directory (its data/ holds the H2 database).
func (s *Server) Dir() string { return s.dir }

// ProcessGroup is the process-group id of the running kc.sh and its JVM (0 when stopped).
func (s *Server) ProcessGroup() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == nil {
		return 0
	}
	return s.running.pgid
}

// Running reports whether the Keycloak process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == nil {
		return false
	}
	select {
	case <-s.running.done:
		return false
	default:
		return true
	}
}

// Stop terminates the process group (SIGTERM, then SIGKILL after StopGracePeriod) and waits for
// the exit. The data directory is kept, so Restart continues with the same realm state. Stopping
// a stopped server is a no-op. An error is returned only when SIGKILL was needed.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	p := s.running
	if p == nil {
		return nil
	}
	s.running = nil
	var err error
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-p.pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(StopGracePeriod):
			_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
			<-p.done
			err = fmt.Errorf("keycloak: process did not exit within %s of SIGTERM; killed", StopGracePeriod)
		}
	}
	// Anything left in the group (e.g. java when kc.sh died first) goes too.
	_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	fmt.Fprintf(p.logFile, "\n=== keycloak test harness: process stopped (%v) ===\n", p.waitErr)
	p.logFile.Close()
	return err
}

// Restart stops the server if it is running and starts it again on the same ports with the same
// data, waiting until it is ready (see Start).
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	err := s.stopLocked()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.startAndWait(ctx, "restart")
}

// Close stops the server and removes its temporary directory (including the default log file).
func (s *Server) Close() {
	_ = s.Stop()
	os.RemoveAll(s.dir)
}

// AdminToken returns a master-realm access token for the bootstrap admin (admin-cli password
// grant). It is short-lived (60 s by default).
func (s *Server) AdminToken(ctx context.Context) (string, error) {
	form := url.Values{
		"grant_type": {"password"},
		"client_id":  {"admin-cli"},
		"username":   {s.opts.AdminUser},
		"password":   {s.opts.AdminPassword},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		s.URL()+"/realms/master/protocol/openid-connect/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("keycloak: admin token: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("keycloak: admin token: HTTP %d: %s", resp.StatusCode, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("keycloak: admin token: unexpected response: %s", body)
	}
	return tok.AccessToken, nil
}

// prepareDir builds the per-server home: symlinks to every entry of the distribution except bin/
// and data/, a bin/ whose kc.sh is a real copy (kc.sh derives kc.home.dir from its own resolved
// path), a private data/import with the realm files, and a java wrapper that makes the JVM die
// with kc.sh.
func (s *Server) prepareDir() error {
	home := s.opts.Home
	entries, err := os.ReadDir(home)
	if err != nil {
		return fmt.Errorf("keycloak: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if name == "bin" || name == "data" || strings.HasPrefix(name, ".") {
			continue
		}
		if err := os.Symlink(filepath.Join(home, name), filepath.Join(s.dir, name)); err != nil {
			return fmt.Errorf("keycloak: %w", err)
		}
	}
	binDir := filepath.Join(s.dir, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		return fmt.Errorf("keycloak: %w", err)
	}
	binEntries, err := os.ReadDir(filepath.Join(home, "bin"))
	if err != nil {
		return fmt.Errorf("keycloak: %w", err)
	}
	for _, e := range binEntries {
		src, dst := filepath.Join(home, "bin", e.Name()), filepath.Join(binDir, e.Name())
		if e.Name() == "kc.sh" {
			if err := copyFile(src, dst, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.Symlink(src, dst); err != nil {
			return fmt.Errorf("keycloak: %w", err)
		}
	}

	importDir := filepath.Join(s.dir, "data", "import")
	if err := os.MkdirAll(importDir, 0o755); err != nil {
		return fmt.Errorf("keycloak: %w", err)
	}
	seen := map[string]string{}
	for _, f := range s.opts.RealmFiles {
		raw, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("keycloak: realm file: %w", err)
		}
		var rep struct {
			Realm string `json:"realm"`
		}
		if err := json.Unmarshal(raw, &rep); err != nil {
			return fmt.Errorf("keycloak: realm file %s: %w", f, err)
		}
		if rep.Realm == "" || strings.ContainsAny(rep.Realm, `/\`) {
			return fmt.Errorf("keycloak: realm file %s: missing or invalid \"realm\" field", f)
		}
		if prev, ok := seen[rep.Realm]; ok {
			return fmt.Errorf("keycloak: realm %q defined by both %s and %s", rep.Realm, prev, f)
		}
		seen[rep.Realm] = f
		// --import-realm reads data/import/<name>-realm.json.
		if err := os.WriteFile(filepath.Join(importDir, rep.Realm+"-realm.json"), raw, 0o644); err != nil {
			return fmt.Errorf("keycloak: %w", err)
		}
		s.realms = append(s.realms, rep.Realm)
	}
	return s.writeJavaWrapper()
}

// writeJavaWrapper creates bin/java-pdeathsig: kc.sh runs the JVM as its own child, so a
// parent-death signal on kc.sh alone would orphan the JVM if kc.sh were SIGKILLed. setpriv (util-linux)
// gives the JVM its own parent-death signal. Without setpriv the JVM is started directly.
func (s *Server) writeJavaWrapper() error {
	java := "java"
	if s.opts.JavaHome != "" {
		java = filepath.Join(s.opts.JavaHome, "bin", "java")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return nil
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %s --pdeathsig TERM %s \"$@\"\n", shQuote(setpriv), shQuote(java))
	return os.WriteFile(filepath.Join(s.dir, "bin", "java-pdeathsig"), []byte(script), 0o755)
}

func (s *Server) startAndWait(ctx context.Context, what string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	for _, port := range []int{s.opts.Port, s.opts.ManagementPort} {
		if err := checkPortFree(s.opts.Host, port); err != nil {
			return err
		}
	}
	if err := s.launch(what); err != nil {
		return err
	}
	if err := s.waitReady(ctx); err != nil {
		s.mu.Lock()
		_ = s.stopLocked()
		s.mu.Unlock()
		return fmt.Errorf("keycloak: %s: %w\n--- last %d lines of %s ---\n%s", what, err, logTailLines, s.logPath, tailFile(s.logPath, logTailLines))
	}
	return nil
}

func (s *Server) args() []string {
	a := []string{"start"}
	if s.optimized {
		a = append(a, "--optimized")
	} else {
		// Not built by hack/keycloak.sh: pass the build options; kc.sh re-runs the Quarkus build
		// (into the shared distribution's lib/, ~40 s) when they differ from the last build.
		a = append(a, "--db=dev-file", "--health-enabled=true")
	}
	if s.opts.TLSCertFile != "" {
		a = append(a,
			"--https-port="+strconv.Itoa(s.opts.HTTPSPort),
			"--https-certificate-file="+s.opts.TLSCertFile,
			"--https-certificate-key-file="+s.opts.TLSKeyFile,
			// Keep /health/ready on plain HTTP (it would inherit TLS otherwise).
			"--http-management-scheme=http",
		)
	}
	if len(s.opts.TruststorePaths) > 0 {
		a = append(a, "--truststore-paths="+strings.Join(s.opts.TruststorePaths, ","))
	}
	return append(a,
		"--http-enabled=true",
		"--hostname-strict=false",
		"--http-host="+s.opts.Host,
		"--http-port="+strconv.Itoa(s.opts.Port),
		"--http-management-port="+strconv.Itoa(s.opts.ManagementPort),
		// Runtime option in 26.x. The default (ispn) forms a JGroups cluster that would bind
		// non-loopback ports and could join other test servers.
		"--cache=local",
		"--import-realm",
		// The readiness poll would otherwise log an INFO line per request while starting.
		"--log-level=INFO,io.smallrye.health:WARN",
	)
}

func (s *Server) launch(what string) error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("keycloak: log file: %w", err)
	}
	args := s.args()
	fmt.Fprintf(logFile, "=== keycloak test harness: %s at %s: kc.sh %s ===\n", what, time.Now().Format(time.RFC3339), strings.Join(args, " "))

	cmd := exec.Command(filepath.Join(s.dir, "bin", "kc.sh"), args...)
	cmd.Dir = s.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = s.env()
	cmd.SysProcAttr = childProcAttr()

	p := &process{cmd: cmd, logFile: logFile, done: make(chan struct{})}
	started := make(chan error, 1)
	// Pdeathsig fires when the OS thread that forked the child exits, not the process. Fork from
	// a goroutine locked to its thread that lives until the child has exited (the thread is
	// discarded afterwards because it is never unlocked).
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		logFile.Close()
		return fmt.Errorf("keycloak: starting kc.sh: %w", err)
	}
	p.pgid = cmd.Process.Pid
	s.mu.Lock()
	s.running = p
	s.mu.Unlock()
	return nil
}

func (s *Server) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "JAVA", "JAVA_HOME", "KC_BOOTSTRAP_ADMIN_USERNAME", "KC_BOOTSTRAP_ADMIN_PASSWORD":
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"KC_BOOTSTRAP_ADMIN_USERNAME="+s.opts.AdminUser,
		"KC_BOOTSTRAP_ADMIN_PASSWORD="+s.opts.AdminPassword,
	)
	if s.opts.JavaHome != "" {
		env = append(env, "JAVA_HOME="+s.opts.JavaHome)
	}
	if wrapper := filepath.Join(s.dir, "bin", "java-pdeathsig"); fileExists(wrapper) {
		env = append(env, "JAVA="+wrapper)
	}
	if _, ok := os.LookupEnv("JAVA_OPTS_APPEND"); !ok {
		env = append(env, "JAVA_OPTS_APPEND="+defaultJavaOptsAppend)
	}
	return env
}

func (s *Server) waitReady(ctx context.Context) error {
	s.mu.Lock()
	p := s.running
	s.mu.Unlock()
	if p == nil {
		return errors.New("not running")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	urls := []string{s.ManagementURL() + "/health/ready"}
	for _, r := range s.realms {
		urls = append(urls, s.URL()+"/realms/"+url.PathEscape(r)+"/.well-known/openid-configuration")
	}
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	next := 0 // URLs are checked in order; each must answer 200 once
	var last string
	for {
		select {
		case <-p.done:
			return fmt.Errorf("process exited before becoming ready: %v", p.waitErr)
		default:
		}
		for next < len(urls) {
			status, err := get(ctx, client, urls[next])
			if err != nil {
				last = err.Error()
				break
			}
			if status != http.StatusOK {
				last = fmt.Sprintf("GET %s: HTTP %d", urls[next], status)
				break
			}
			next++
		}
		if next == len(urls) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready (%v); last check: %s", ctx.Err(), last)
		case <-p.done:
			return fmt.Errorf("process exited before becoming ready: %v", p.waitErr)
		case <-ticker.C:
		}
	}
}

func get(ctx context.Context, client *http.Client, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// builtForTests reports whether `hack/keycloak.sh install` has run `kc.sh build` with the options
// this package needs, so `start --optimized` can be used.
func builtForTests(home string) bool {
	zr, err := zip.OpenReader(filepath.Join(home, "lib", "quarkus", "generated-bytecode.jar"))
	if err != nil {
		return false
	}
	defer zr.Close()
	f, err := zr.Open("META-INF/keycloak-persisted.properties")
	if err != nil {
		return false
	}
	defer f.Close()
	props := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			props[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return props["kc.optimized"] == "true" && props["kc.profile"] == "prod" &&
		props["kc.health-enabled"] == "true" && (props["kc.db"] == "" || props["kc.db"] == "dev-file")
}

func defaultJavaHome() string {
	if v := os.Getenv(EnvJavaHome); v != "" {
		return v
	}
	if m, _ := filepath.Glob("/usr/lib/jvm/temurin-25*"); len(m) > 0 {
		sort.Strings(m)
		for i := len(m) - 1; i >= 0; i-- {
			if fileExists(filepath.Join(m[i], "bin", "java")) {
				return m[i]
			}
		}
	}
	return os.Getenv("JAVA_HOME")
}

func freePort(host string) (int, error) {
	p, err := freeport.On(host)
	if err != nil {
		return 0, fmt.Errorf("keycloak: picking a free port: %w", err)
	}
	return p, nil
}

// checkPortFree fails when something already listens on host:port, so readiness checks can
// never be answered by another server.
func checkPortFree(host string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("keycloak: port %d on %s is not free: %w", port, host, err)
	}
	return l.Close()
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("keycloak: %w", err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		return fmt.Errorf("keycloak: %w", err)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// tailFile returns the last n lines of path (best effort).
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	const maxRead = 256 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxRead {
		_, _ = f.Seek(st.Size()-maxRead, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Introspect asks a realm whether a token is active (RFC 7662), authenticating as the client
// (which must be in the token's audience). hint is an optional token_type_hint. baseURL must
// be the URL the token was issued through: Keycloak checks the issuer's host.
func Introspect(baseURL, realm, clientID, clientSecret, token, hint string) (bool, error) {
	return IntrospectContext(context.Background(), baseURL, realm, clientID, clientSecret, token, hint)
}

// IntrospectContext is Introspect bounded by ctx and a 10 s timeout. Any answer other than a
// 200 with an "active" field is an error, never "inactive": a refused client must not read as
// a revoked token.
func IntrospectContext(ctx context.Context, baseURL, realm, clientID, clientSecret, token, hint string) (bool, error) {
	form := url.Values{"token": {token}, "client_id": {clientID}, "client_secret": {clientSecret}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/realms/"+realm+"/protocol/openid-connect/token/introspect", strings.NewReader(form.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var r struct {
		Active *bool `json:"active"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &r) != nil || r.Active == nil {
		return false, fmt.Errorf("introspection in realm %s: HTTP %d: %s", realm, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return *r.Active, nil
}
