package integration

// The kubectl plugin, run as a process (the binary users install) against the real API server,
// the real Keycloak and the in-process operator. Every subcommand, the documented exit codes,
// kubectl's flags (-n, -A, -l, -o, --context), and bootstrap end to end: the tests complete the
// device login through Keycloak's own pages as a browser would.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// Facts of the device-login clients and user of test/keycloak/realm-mlflow.json.
const (
	deviceClient       = "mlflow-device"
	deviceSecret       = "mlflowDeviceTestSecret0003"
	deviceShortClient  = "mlflow-device-short" // device codes expire after 3 s
	deviceShortSecret  = "mlflowDeviceShortTestSecret0004"
	deviceUser         = "bob"
	deviceUserPassword = "bob-password"
)

// The plugin's documented exit codes.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitNotFound = 3
	exitNotReady = 4
)

var pluginBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
	took time.Duration
}

// pluginBinary builds cmd/kubectl-mlflow_token once per test process.
func pluginBinary(t *testing.T) string {
	t.Helper()
	pluginBuild.once.Do(func() {
		start := time.Now()
		if pluginBuild.dir, pluginBuild.err = os.MkdirTemp("", "mlflow-token-plugin-"); pluginBuild.err != nil {
			return
		}
		pluginBuild.path = filepath.Join(pluginBuild.dir, "kubectl-mlflow_token")
		cmd := exec.Command("go", "build", "-o", pluginBuild.path, "./cmd/kubectl-mlflow_token")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			pluginBuild.err = fmt.Errorf("building the plugin: %v\n%s", err, out)
		}
		pluginBuild.took = time.Since(start)
	})
	if pluginBuild.err != nil {
		t.Fatal(pluginBuild.err)
	}
	return pluginBuild.path
}

// removePluginBinary removes the build (TestMain calls it at the end).
func removePluginBinary() {
	if pluginBuild.dir != "" {
		_ = os.RemoveAll(pluginBuild.dir)
	}
}

type pluginResult struct {
	stdout, stderr string
	code           int
}

func (r pluginResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runPlugin runs the plugin with the suite's kubeconfig (unless args name another) and returns
// its output and exit code.
func runPlugin(t *testing.T, args ...string) pluginResult {
	t.Helper()
	p := startPlugin(t, args...)
	return p.wait(t, 3*time.Minute)
}

// mustPlugin runs the plugin and fails the test unless it exits 0.
func mustPlugin(t *testing.T, args ...string) pluginResult {
	t.Helper()
	r := runPlugin(t, args...)
	if r.code != exitOK {
		t.Fatalf("kubectl mlflow-token %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// expectExit runs the plugin and checks its exit code.
func expectExit(t *testing.T, code int, args ...string) pluginResult {
	t.Helper()
	r := runPlugin(t, args...)
	if r.code != code {
		t.Fatalf("kubectl mlflow-token %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	return r
}

// runningPlugin is a plugin process whose stderr is watched for the device login URL.
type runningPlugin struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	uri            chan string
	stderrDone     chan struct{}
}

var deviceURIPattern = regexp.MustCompile(`https?://\S+user_code=\S+`)

func startPlugin(t *testing.T, args ...string) *runningPlugin {
	t.Helper()
	bin := pluginBinary(t)
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--kubeconfig") }) {
		args = append(args, "--kubeconfig", kubeconfigPath)
	}
	p := &runningPlugin{uri: make(chan string, 1), stderrDone: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "KUBECONFIG=/nonexistent")
	p.cmd.Stdout = &p.stdout
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.stderrDone)
		sc := bufio.NewScanner(pipe)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			_, _ = p.stderr.Write([]byte(line + "\n"))
			if m := deviceURIPattern.FindString(line); m != "" && !sent {
				p.uri <- m
				sent = true
			}
		}
	}()
	return p
}

// waitURI returns the verification URL (with the user code) the plugin printed.
func (p *runningPlugin) waitURI(t *testing.T) string {
	t.Helper()
	select {
	case u := <-p.uri:
		return u
	case <-p.stderrDone:
		r := p.wait(t, time.Minute)
		t.Fatalf("the plugin printed no verification URL: %s", r)
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		t.Fatalf("no verification URL within a minute; stderr so far:\n%s", p.stderr.String())
	}
	return ""
}

func (p *runningPlugin) wait(t *testing.T, timeout time.Duration) pluginResult {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		<-p.stderrDone
		done <- p.cmd.Wait()
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-done
		t.Fatalf("the plugin did not finish within %s; stderr:\n%s", timeout, p.stderr.String())
	}
	return pluginResult{stdout: p.stdout.String(), stderr: p.stderr.String(), code: p.cmd.ProcessState.ExitCode()}
}

// browser is a person's browser: cookies, redirects, HTML forms.
type browser struct {
	t *testing.T
	c *http.Client
	// page is the URL of the page shown last; form actions are relative to it.
	page *url.URL
}

// newBrowser trusts the system's roots, or only caPEM when given.
func newBrowser(t *testing.T, caPEM []byte) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	if caPEM != nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	return &browser{t: t, c: c}
}

// deviceLogin opens the verification URL, logs in and answers the consent screen (accept or
// deny). It returns "success" or "denied" as Keycloak's last page says.
func (b *browser) deviceLogin(verificationURL, user, password string, accept bool) string {
	b.t.Helper()
	body := b.do(http.NewRequest(http.MethodGet, verificationURL, nil))
	for step := 0; step < 6; step++ {
		switch {
		case strings.Contains(body, "Device Login Successful"):
			return "success"
		case strings.Contains(body, "Consent denied"):
			return "denied"
		case strings.Contains(body, `id="kc-form-login"`):
			action, fields := form(b.t, body, `id="kc-form-login"`)
			fields.Set("username", user)
			fields.Set("password", password)
			body = b.post(action, fields)
		case strings.Contains(body, `name="accept"`):
			// The consent screen: the client asks for offline access in the user's name.
			action, fields := form(b.t, body, `name="accept"`)
			if accept {
				fields.Set("accept", "Yes")
			} else {
				fields.Set("cancel", "No")
			}
			body = b.post(action, fields)
		default:
			b.t.Fatalf("unexpected page in the device login:\n%s", pageText(body))
		}
	}
	b.t.Fatalf("the device login did not end after 6 pages; last:\n%s", pageText(body))
	return ""
}

func (b *browser) post(action string, fields url.Values) string {
	b.t.Helper()
	u, err := b.page.Parse(action)
	if err != nil {
		b.t.Fatalf("form action %q: %v", action, err)
	}
	req, err := http.NewRequest(http.MethodPost, u.String(), strings.NewReader(fields.Encode()))
	if err == nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return b.do(req, err)
}

func (b *browser) do(req *http.Request, err error) string {
	b.t.Helper()
	if err != nil {
		b.t.Fatal(err)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	b.page = resp.Request.URL
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 500 {
		b.t.Fatalf("%s %s: HTTP %d\n%s", req.Method, req.URL, resp.StatusCode, pageText(string(raw)))
	}
	return string(raw)
}

var (
	formTag     = regexp.MustCompile(`(?s)<form\b[^>]*>.*?</form>`)
	actionAttr  = regexp.MustCompile(`\baction="([^"]*)"`)
	hiddenInput = regexp.MustCompile(`<input\b[^>]*type="hidden"[^>]*>`)
	nameAttr    = regexp.MustCompile(`\bname="([^"]*)"`)
	valueAttr   = regexp.MustCompile(`\bvalue="([^"]*)"`)
	tags        = regexp.MustCompile(`(?s)<script.*?</script>|<style.*?</style>|<[^>]+>`)
	spaces      = regexp.MustCompile(`\s+`)
)

// form finds the form that contains marker and returns its action and hidden fields.
func form(t *testing.T, page, marker string) (string, url.Values) {
	t.Helper()
	for _, f := range formTag.FindAllString(page, -1) {
		if !strings.Contains(f, marker) {
			continue
		}
		open := f[:strings.Index(f, ">")+1]
		m := actionAttr.FindStringSubmatch(open)
		if m == nil {
			t.Fatalf("form without action: %s", open)
		}
		fields := url.Values{}
		for _, in := range hiddenInput.FindAllString(f, -1) {
			n, v := nameAttr.FindStringSubmatch(in), valueAttr.FindStringSubmatch(in)
			if n != nil {
				val := ""
				if v != nil {
					val = html.UnescapeString(v[1])
				}
				fields.Set(html.UnescapeString(n[1]), val)
			}
		}
		return html.UnescapeString(m[1]), fields
	}
	t.Fatalf("no form with %s on the page:\n%s", marker, pageText(page))
	return "", nil
}

func pageText(page string) string {
	return strings.TrimSpace(spaces.ReplaceAllString(tags.ReplaceAllString(page, " "), " "))
}

// noSecretsIn fails when an output holds any of the secrets (or a JWT's signature part).
func noSecretsIn(t *testing.T, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(out, s) {
			t.Errorf("the plugin printed a secret (%d chars)", len(s))
		}
		if parts := strings.Split(s, "."); len(parts) == 3 && strings.Contains(out, parts[2]) {
			t.Errorf("the plugin printed a token's signature")
		}
	}
}

// deviceToken is a RefreshToken resource for the device-login client, with its client secret.
func deviceToken(t *testing.T, ns, name, client, secret string, mutate ...func(*authv1alpha1.MLflowAccessToken)) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	createClientSecret(t, ns, "kc-"+name, secret)
	obj := newToken(ns, name, append([]func(*authv1alpha1.MLflowAccessToken){func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Keycloak.ClientID = client
		o.Spec.Keycloak.ClientSecretRef = &authv1alpha1.SecretKeyRef{Name: "kc-" + name, Key: "client-secret"}
		o.Spec.Grant = authv1alpha1.GrantSpec{
			Type:                  authv1alpha1.GrantRefreshToken,
			RefreshTokenSecretRef: &authv1alpha1.RefreshTokenRef{Name: name + "-bootstrap", Key: "refresh-token"},
		}
	}}, mutate...)...)
	create(t, obj)
	return obj
}

// bootstrapWithLogin runs bootstrap and logs in through the browser; it returns the result.
func bootstrapWithLogin(t *testing.T, accept bool, args ...string) (pluginResult, string) {
	t.Helper()
	return bootstrapAt(t, kcServer.URL(), nil, accept, args...)
}

// bootstrapAt is bootstrapWithLogin for Keycloak at base, with a browser that trusts caPEM.
func bootstrapAt(t *testing.T, base string, caPEM []byte, accept bool, args ...string) (pluginResult, string) {
	t.Helper()
	p := startPlugin(t, append([]string{"bootstrap"}, args...)...)
	uri := p.waitURI(t)
	if !strings.HasPrefix(uri, base+"/realms/"+realm+"/device") {
		t.Errorf("verification URL %s is not the realm's device page at %s", uri, base)
	}
	// One person, one login at a time: Keycloak answers 500 to two consents of the same user to
	// the same client at once (both insert the consent row).
	deviceLoginMu.Lock()
	outcome := newBrowser(t, caPEM).deviceLogin(uri, deviceUser, deviceUserPassword, accept)
	deviceLoginMu.Unlock()
	return p.wait(t, 3*time.Minute), outcome
}

var deviceLoginMu sync.Mutex

// Bootstrap end to end: the resource fails without a bootstrap token; bootstrap prints the
// verification URL, the person logs in and consents in a browser, the plugin's poll gets an
// offline token, writes it into the bootstrap Secret (creating it), and the operator turns the
// resource Ready with a token for that person. A second bootstrap (a chain about to end) replaces
// only the token's key of the now existing Secret and starts a new session.
func TestPluginBootstrap(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	deviceToken(t, ns, "boot", deviceClient, deviceSecret)
	waitReason(t, ns, "boot", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonRefreshTokenNotFound, 30*time.Second)

	pluginBinary(t) // built before the clock starts
	start := time.Now()
	r, outcome := bootstrapWithLogin(t, true, "boot", "-n", ns, "--timeout", "90s")
	t.Logf("bootstrap (login, poll, write, operator Ready) took %s", time.Since(start).Round(time.Millisecond))
	if outcome != "success" || r.code != exitOK {
		t.Fatalf("browser: %s; plugin: %s", outcome, r)
	}
	for _, want := range []string{`Created Secret ` + ns + `/boot-bootstrap with key "refresh-token"`, "an offline token", `user "bob"`, `client "mlflow-device"`, "renewed: new token in Secret boot"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "Check that the page shows the code") {
		t.Errorf("stderr lacks the instructions:\n%s", r.stderr)
	}
	t.Logf("bootstrap %s", r)

	sec := getSecret(t, ns, "boot-bootstrap")
	if sec == nil {
		t.Fatal("no bootstrap Secret")
	}
	rt := string(sec.Data["refresh-token"])
	seenTokens.add(rt)
	claims := jwtPayload(t, rt)
	if claims["typ"] != "Offline" || claims["azp"] != deviceClient || claims["iss"] != kcServer.URL()+"/realms/"+realm {
		t.Errorf("bootstrap token claims typ=%v azp=%v iss=%v", claims["typ"], claims["azp"], claims["iss"])
	}
	obj := waitReady(t, ns, "boot", 30*time.Second)
	if obj.Status.Token == nil || obj.Status.Token.PreferredUsername != deviceUser || !obj.Status.OfflineSession {
		t.Errorf("the token is not bob's offline session: %+v offline=%v", obj.Status.Token, obj.Status.OfflineSession)
	}
	access := secretToken(getSecret(t, ns, "boot"))
	noSecretsIn(t, r.stdout+r.stderr, rt, access, deviceSecret)
	firstSession := obj.Status.SessionID

	// inspect shows the person's claims and the offline session.
	ins := mustPlugin(t, "inspect", "boot", "-n", ns)
	for _, want := range []string{`preferred_username:\s+bob\n`, `Session:\s+\S+ \(offline\)`, "grant RefreshToken"} {
		if !regexp.MustCompile(want).MatchString(ins.stdout) {
			t.Errorf("inspect lacks %q:\n%s", want, ins.stdout)
		}
	}

	// Re-bootstrap into the existing Secret: only the key changes.
	sec.Data["note"] = []byte("kept")
	if err := k8s.Update(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	r, outcome = bootstrapWithLogin(t, true, "boot", "-n", ns)
	if outcome != "success" || r.code != exitOK || !strings.Contains(r.stdout, `Updated key "refresh-token" of Secret `+ns+"/boot-bootstrap") {
		t.Fatalf("second bootstrap: browser %s; plugin %s", outcome, r)
	}
	sec2 := getSecret(t, ns, "boot-bootstrap")
	rt2 := string(sec2.Data["refresh-token"])
	seenTokens.add(rt2)
	if string(sec2.Data["note"]) != "kept" || rt2 == rt || rt2 == "" {
		t.Errorf("the second bootstrap did not replace only the token: note=%q, token changed=%v", sec2.Data["note"], rt2 != rt)
	}
	obj = waitReady(t, ns, "boot", 30*time.Second)
	if obj.Status.SessionID == "" || obj.Status.SessionID == firstSession {
		t.Errorf("the operator did not start a new chain from the new token: session %q (first %q)", obj.Status.SessionID, firstSession)
	}
	noSecretsIn(t, r.stdout+r.stderr, rt, rt2, deviceSecret)
	deleteAndWait(t, obj, 30*time.Second)
}

// --offline=false: a refresh token bound to the browser's SSO session, and an online session.
func TestPluginBootstrapOnline(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	deviceToken(t, ns, "online", deviceClient, deviceSecret)
	r, outcome := bootstrapWithLogin(t, true, "online", "-n", ns, "--offline=false")
	if outcome != "success" || r.code != exitOK || !strings.Contains(r.stdout, "a refresh token for user \"bob\"") ||
		!strings.Contains(r.stderr, `scope "openid"`) {
		t.Fatalf("browser %s; plugin %s", outcome, r)
	}
	rt := string(getSecret(t, ns, "online-bootstrap").Data["refresh-token"])
	seenTokens.add(rt)
	if typ := jwtPayload(t, rt)["typ"]; typ != "Refresh" {
		t.Errorf("token type %v, want Refresh", typ)
	}
	obj := waitReady(t, ns, "online", 30*time.Second)
	if obj.Status.OfflineSession || obj.Status.SessionID == "" {
		t.Errorf("want an online session: %q offline=%v", obj.Status.SessionID, obj.Status.OfflineSession)
	}
	noSecretsIn(t, r.stdout+r.stderr, rt, deviceSecret)
	deleteAndWait(t, obj, 30*time.Second)
}

// The person denies the request on the consent screen: the plugin says so, exits 1 and writes
// nothing.
func TestPluginBootstrapDenied(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	deviceToken(t, ns, "deny", deviceClient, deviceSecret)
	r, outcome := bootstrapWithLogin(t, false, "deny", "-n", ns)
	if outcome != "denied" || r.code != exitError || !strings.Contains(r.stderr, "denied in the browser") {
		t.Fatalf("browser %s; plugin %s", outcome, r)
	}
	if getSecret(t, ns, "deny-bootstrap") != nil {
		t.Error("a bootstrap Secret was written after a denied login")
	}
	deleteAndWait(t, get(t, ns, "deny"), 30*time.Second)
}

// Nobody logs in before the code expires (this client's codes live 3 s): the plugin stops
// polling, says so, exits 1 and writes nothing.
func TestPluginBootstrapExpired(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	deviceToken(t, ns, "late", deviceShortClient, deviceShortSecret)
	p := startPlugin(t, "bootstrap", "late", "-n", ns)
	p.waitURI(t)
	r := p.wait(t, time.Minute)
	if r.code != exitError || !strings.Contains(r.stderr, "the code expired before the login was completed") {
		t.Fatalf("plugin %s", r)
	}
	if getSecret(t, ns, "late-bootstrap") != nil {
		t.Error("a bootstrap Secret was written after the code expired")
	}
	deleteAndWait(t, get(t, ns, "late"), 30*time.Second)
}

// Wrong clients and missing inputs fail before any login, with a message that says what to fix.
func TestPluginBootstrapWrongClient(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	const wrongSecret = "not-the-device-secret-71c2"
	cases := []struct {
		name, client, secret string
		mutate               func(*authv1alpha1.MLflowAccessToken)
		want                 string
	}{
		{"nogrant", clientID, clientSecret, nil, `turn on "OAuth 2.0 Device Authorization Grant"`},
		{"badsecret", deviceClient, wrongSecret, nil, `Keycloak rejected client "mlflow-device"`},
		{"norealm", deviceClient, deviceSecret, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.Realm = "no-such-realm" }, `no realm "no-such-realm"`},
		{"cc", deviceClient, deviceSecret, func(o *authv1alpha1.MLflowAccessToken) {
			o.Spec.Grant = authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials}
		}, "bootstrap seeds RefreshToken grants only"},
		{"nosecret", deviceClient, deviceSecret, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.ClientSecretRef.Name = "absent" }, "Secret " + "NS/absent (keycloak.clientSecretRef) does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mutate []func(*authv1alpha1.MLflowAccessToken)
			if tc.mutate != nil {
				mutate = append(mutate, tc.mutate)
			}
			obj := deviceToken(t, ns, tc.name, tc.client, tc.secret, mutate...)
			defer deleteAndWait(t, obj, 30*time.Second)
			r := expectExit(t, exitError, "bootstrap", tc.name, "-n", ns)
			t.Logf("%s", r.stderr)
			if want := strings.ReplaceAll(tc.want, "NS", ns); !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
			}
			if strings.Contains(r.stderr, "user_code=") {
				t.Errorf("a login was offered although it cannot work:\n%s", r.stderr)
			}
			noSecretsIn(t, r.stdout+r.stderr, tc.secret)
		})
	}
}

// A person who may not read the client secret is told so.
func TestPluginBootstrapForbiddenSecret(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	deviceToken(t, ns, "nosee", deviceClient, deviceSecret)
	kc := restrictedKubeconfig(t, ns, "token-reader", []rbacv1.PolicyRule{
		{APIGroups: []string{authv1alpha1.GroupVersion.Group}, Resources: []string{"mlflowaccesstokens"}, Verbs: []string{"get", "list", "patch"}},
	})
	r := expectExit(t, exitError, "bootstrap", "nosee", "-n", ns, "--kubeconfig", kc)
	want := "you may not read Secret " + ns + "/kc-nosee (keycloak.clientSecretRef)"
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
	deleteAndWait(t, get(t, ns, "nosee"), 30*time.Second)
}

// Keycloak over HTTPS with a private CA: bootstrap verifies the certificate with the resource's
// CA (caConfigMapRef here) and refuses a Keycloak whose certificate does not chain to it; the
// operator then redeems the token through the same HTTPS URL.
func TestPluginBootstrapTLS(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "keycloak-ca", Namespace: ns}, Data: map[string]string{"ca.crt": string(pki.CAPEM)}})
	deviceToken(t, ns, "tls", deviceClient, deviceSecret, func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Keycloak.URL = kcServer.HTTPSURL()
		o.Spec.Keycloak.CAConfigMapRef = &authv1alpha1.ConfigMapKeyRef{Name: "keycloak-ca", Key: "ca.crt"}
	})
	deviceToken(t, ns, "wrongca", deviceClient, deviceSecret, func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Keycloak.URL = kcServer.HTTPSURL()
		o.Spec.Keycloak.CABundle = string(pki.OtherCAPEM)
	})

	r := expectExit(t, exitError, "bootstrap", "wrongca", "-n", ns)
	t.Logf("%s", r.stderr)
	if !strings.Contains(r.stderr, "Hint: Keycloak's certificate is not trusted") || strings.Contains(r.stderr, "user_code=") {
		t.Errorf("bootstrap against a certificate of another CA: %s", r)
	}

	r, outcome := bootstrapAt(t, kcServer.HTTPSURL(), pki.CAPEM, true, "tls", "-n", ns)
	if outcome != "success" || r.code != exitOK {
		t.Fatalf("browser %s; plugin %s", outcome, r)
	}
	rt := string(getSecret(t, ns, "tls-bootstrap").Data["refresh-token"])
	seenTokens.add(rt)
	if iss := jwtPayload(t, rt)["iss"]; iss != kcServer.HTTPSURL()+"/realms/"+realm {
		t.Errorf("bootstrap token issuer %v, want the HTTPS URL", iss)
	}
	obj := waitReady(t, ns, "tls", 30*time.Second)
	if obj.Status.Token == nil || obj.Status.Token.PreferredUsername != deviceUser || obj.Status.Token.Issuer != kcServer.HTTPSURL()+"/realms/"+realm {
		t.Errorf("token after an HTTPS bootstrap: %+v", obj.Status.Token)
	}
	noSecretsIn(t, r.stdout+r.stderr, rt, deviceSecret)
	deleteAndWait(t, obj, 30*time.Second)
	deleteAndWait(t, get(t, ns, "wrongca"), 30*time.Second)
}

// restrictedKubeconfig writes a kubeconfig for a new user holding only rules in namespace ns.
func restrictedKubeconfig(t *testing.T, ns, user string, rules []rbacv1.PolicyRule) string {
	t.Helper()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: user, Namespace: ns}, Rules: rules}
	create(t, role)
	create(t, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: user},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	})
	u, err := testEnv.AddUser(envtest.User{Name: user}, restCfgAdmin)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// list, inspect, -A, -l, -o, --context, completion of names, and the not-Ready exit code.
func TestPluginListAndInspect(t *testing.T) {
	t.Parallel()
	ns1, ns2 := newNamespace(t), newNamespace(t)
	label := ns1 // unique per run: -A must see only this test's resources
	for _, x := range []struct{ ns, name, team string }{{ns1, "a", label}, {ns1, "b", "other-" + label}, {ns2, "c", label}} {
		createClientSecret(t, x.ns, "kc-client-"+x.name, clientSecret)
		create(t, newToken(x.ns, x.name, func(o *authv1alpha1.MLflowAccessToken) {
			o.Labels = map[string]string{"team": x.team}
			o.Spec.Keycloak.ClientSecretRef.Name = "kc-client-" + x.name
		}))
	}
	for _, x := range [][2]string{{ns1, "a"}, {ns1, "b"}, {ns2, "c"}} {
		waitReady(t, x[0], x[1], 30*time.Second)
	}

	// The default table.
	out := mustPlugin(t, "list", "-n", ns1).stdout
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^NAME\s+READY\s+REASON\s+SECRET\s+EXPIRES\s+NEXT RENEWAL\s+AGE$`).MatchString(lines[0]) {
		t.Fatalf("list table:\n%s", out)
	}
	// Countdowns: "in 9s"; a renewal that is due this very moment shows as "due 0s ago".
	if !regexp.MustCompile(`^a\s+True\s+TokenValid\s+a\s+(in \S+|expired \S+ ago)\s+(in \S+|due \S+ ago)\s+\S+$`).MatchString(lines[1]) || !strings.HasPrefix(lines[2], "b ") {
		t.Errorf("list rows:\n%s", out)
	}
	wide := mustPlugin(t, "list", "-n", ns1, "-o", "wide").stdout
	for _, col := range []string{"ROTATIONS", "EXPIRES AT", "RENEWAL AT", "MESSAGE"} {
		if !strings.Contains(wide, col) {
			t.Errorf("-o wide lacks %s:\n%s", col, wide)
		}
	}

	// -A with -l: NAMESPACE column, both namespaces, only the label's resources.
	out = mustPlugin(t, "list", "-A", "-l", "team="+label).stdout
	lines = strings.Split(strings.TrimSpace(out), "\n")
	// Sorted by namespace, then name.
	want := []string{ns1 + ` +a `, ns2 + ` +c `}
	if ns2 < ns1 {
		want[0], want[1] = want[1], want[0]
	}
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAMESPACE") || !regexp.MustCompile(`^`+want[0]).MatchString(lines[1]) ||
		!regexp.MustCompile(`^`+want[1]).MatchString(lines[2]) {
		t.Errorf("list -A -l:\n%s", out)
	}

	// -o json parsed back.
	var list authv1alpha1.MLflowAccessTokenList
	raw := mustPlugin(t, "list", "-A", "-l", "team="+label, "-o", "json").stdout
	if err := json.Unmarshal([]byte(raw), &list); err != nil {
		t.Fatalf("-o json: %v\n%s", err, raw)
	}
	names := map[string]bool{}
	for _, it := range list.Items {
		names[it.Namespace+"/"+it.Name] = it.APIVersion == authv1alpha1.GroupVersion.String() && it.Kind == "MLflowAccessToken" && it.Status.ExpiresAt != nil
	}
	if list.Kind != "MLflowAccessTokenList" || len(list.Items) != 2 || !names[ns1+"/a"] || !names[ns2+"/c"] {
		t.Errorf("-o json: kind %q, %d items: %s", list.Kind, len(list.Items), raw)
	}
	if strings.Contains(raw, "managedFields") {
		t.Error("-o json shows managedFields (kubectl leaves them out)")
	}
	raw = mustPlugin(t, "list", "-n", ns1, "-o", "yaml").stdout
	list = authv1alpha1.MLflowAccessTokenList{}
	if err := yaml.Unmarshal([]byte(raw), &list); err != nil || len(list.Items) != 2 {
		t.Errorf("-o yaml (%v):\n%s", err, raw)
	}
	if got := mustPlugin(t, "list", "-n", ns1, "-o", "name").stdout; got != "mlflowaccesstoken.auth.mlflow-token-operator.io/a\nmlflowaccesstoken.auth.mlflow-token-operator.io/b\n" {
		t.Errorf("-o name:\n%s", got)
	}
	if got := mustPlugin(t, "list", "-n", ns1, "-o", "jsonpath={.items[*].metadata.name}").stdout; got != "a b" {
		t.Errorf("-o jsonpath: %q", got)
	}
	if r := expectExit(t, exitOK, "list", "-n", newNamespace(t)); r.stdout != "" || !strings.Contains(r.stderr, "No MLflowAccessTokens found in namespace") {
		t.Errorf("empty list: %s", r)
	}

	// --context: a kubeconfig whose current context is unreachable and another one with
	// namespace ns1.
	kc := twoContextKubeconfig(t, ns1)
	out = mustPlugin(t, "list", "--kubeconfig", kc, "--context", "team", "-o", "name").stdout
	if strings.Count(out, "\n") != 2 {
		t.Errorf("list --context team (namespace from the context):\n%s", out)
	}
	r := expectExit(t, exitError, "list", "--kubeconfig", kc, "--request-timeout", "5s")
	if !strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Errorf("the current context should have been used and failed: %s", r)
	}

	// inspect: text, -o json, --require-ready.
	ins := mustPlugin(t, "inspect", "a", "-n", ns1, "--require-ready")
	for _, want := range []string{"preferred_username:", "service-account-" + clientID, "azp:", "aud:", "Expires:", "Next renewal:", "Ready:", "in "} {
		if !strings.Contains(ins.stdout, want) {
			t.Errorf("inspect lacks %q:\n%s", want, ins.stdout)
		}
	}
	var rep struct {
		Ready     bool `json:"ready"`
		ExpiresAt struct {
			Seconds int64 `json:"secondsFromNow"`
		} `json:"expiresAt"`
		Claims struct {
			Azp string   `json:"azp"`
			Aud []string `json:"aud"`
		} `json:"claims"`
	}
	raw = mustPlugin(t, "inspect", "a", "-n", ns1, "-o", "json").stdout
	if err := json.Unmarshal([]byte(raw), &rep); err != nil || !rep.Ready || rep.Claims.Azp != clientID || !slices.Contains(rep.Claims.Aud, "mlflow") ||
		rep.ExpiresAt.Seconds < -30 || rep.ExpiresAt.Seconds > int64(tokenLifespan/time.Second)+1 {
		t.Errorf("inspect -o json (%v):\n%s", err, raw)
	}
	tokens := []string{secretToken(getSecret(t, ns1, "a")), secretToken(getSecret(t, ns1, "b")), clientSecret}
	noSecretsIn(t, ins.stdout+ins.stderr+raw+out, tokens...)

	// Without get on Secrets, inspect still reports, and says why the claims are missing.
	kc = restrictedKubeconfig(t, ns1, "inspector", []rbacv1.PolicyRule{
		{APIGroups: []string{authv1alpha1.GroupVersion.Group}, Resources: []string{"mlflowaccesstokens"}, Verbs: []string{"get", "list"}},
	})
	r = mustPlugin(t, "inspect", "a", "-n", ns1, "--kubeconfig", kc, "--require-ready")
	if !strings.Contains(r.stdout, "Token claims:          (you may not read Secret a (needs get on secrets in namespace "+ns1+"))") ||
		!strings.Contains(r.stdout, "Expires:") {
		t.Errorf("inspect without Secret access: %s", r)
	}

	// Not Ready: exit 4, after the report.
	create(t, newToken(ns1, "broken", func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.ClientSecretRef.Name = "absent" }))
	waitReason(t, ns1, "broken", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonClientSecretNotFound, 30*time.Second)
	r = expectExit(t, exitNotReady, "inspect", "broken", "-n", ns1, "--require-ready")
	if !strings.Contains(r.stdout, "ClientSecretNotFound") || !strings.Contains(r.stderr, "is not Ready") {
		t.Errorf("inspect --require-ready on a failing token: %s", r)
	}
	mustPlugin(t, "inspect", "broken", "-n", ns1) // without the flag: exit 0
	expectExit(t, exitNotFound, "inspect", "nosuch", "-n", ns1)

	// Shell completion of names (as kubectl's plugin completion calls it).
	// The word being completed comes last, so --kubeconfig goes before it.
	comp := mustPlugin(t, "__complete", "inspect", "--kubeconfig", kubeconfigPath, "-n", ns1, "").stdout
	if !strings.Contains(comp, "a\nb\nbroken\n") {
		t.Errorf("completion of names:\n%s", comp)
	}
	for _, x := range [][2]string{{ns1, "a"}, {ns1, "b"}, {ns1, "broken"}, {ns2, "c"}} {
		deleteAndWait(t, get(t, x[0], x[1]), 30*time.Second)
	}
}

// twoContextKubeconfig is the suite's kubeconfig with its context renamed "team" (namespace ns)
// and a current context "broken" pointing at a port nothing listens on.
func twoContextKubeconfig(t *testing.T, ns string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cur := cfg.Contexts[cfg.CurrentContext]
	team := cur.DeepCopy()
	team.Namespace = ns
	cfg.Contexts = map[string]*clientcmdapi.Context{"team": team, "broken": {Cluster: "broken", AuthInfo: cur.AuthInfo}}
	cfg.Clusters["broken"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1", InsecureSkipTLSVerify: true}
	cfg.CurrentContext = "broken"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// renew and revoke by name, by selector across namespaces, and their exit codes: renew rotates
// now; revoke makes the old token inactive at Keycloak and rotates; a missing name is exit 3
// while the others are still acted on.
func TestPluginRenewRevoke(t *testing.T) {
	t.Parallel()
	ns1, ns2 := newNamespace(t), newNamespace(t)
	label := ns1
	for _, x := range [][2]string{{ns1, "cli"}, {ns1, "cli2"}, {ns2, "cli3"}} {
		createClientSecret(t, x[0], "kc-"+x[1], clientSecret)
		create(t, newToken(x[0], x[1], func(o *authv1alpha1.MLflowAccessToken) {
			o.Labels = map[string]string{"team": label}
			o.Spec.Keycloak.ClientSecretRef.Name = "kc-" + x[1]
			o.Spec.RenewBefore = nil
		}))
	}
	obj := waitReady(t, ns1, "cli", 30*time.Second)
	waitReady(t, ns1, "cli2", 30*time.Second)
	waitReady(t, ns2, "cli3", 30*time.Second)
	first := secretToken(getSecret(t, ns1, "cli"))

	r := expectExit(t, exitNotFound, "renew", "cli", "nosuch", "-n", ns1)
	if !strings.Contains(r.stdout, "mlflowaccesstoken/cli: renewed: new token in Secret cli") || !strings.Contains(r.stderr, `"nosuch" not found`) {
		t.Fatalf("renew cli nosuch: %s", r)
	}
	renewed := get(t, ns1, "cli")
	if renewed.Status.LastRenewalRequest == "" || renewed.Status.Rotations <= obj.Status.Rotations {
		t.Errorf("renew not recorded: %+v", renewed.Status)
	}
	second := secretToken(getSecret(t, ns1, "cli"))
	if second == first {
		t.Error("renew did not rotate the token")
	}

	// -A -l: both namespaces, nothing else.
	before3 := get(t, ns2, "cli3").Status.LastRenewalRequest
	r = mustPlugin(t, "renew", "-A", "-l", "team="+label)
	if strings.Count(r.stdout, "renewed: new token") != 3 || !strings.Contains(r.stdout, "(namespace "+ns2+")") {
		t.Errorf("renew -A -l:\n%s", r)
	}
	if get(t, ns2, "cli3").Status.LastRenewalRequest == before3 {
		t.Error("renew -A -l did not reach the other namespace")
	}
	r = mustPlugin(t, "renew", "--all", "-n", ns2, "--wait=false")
	if strings.TrimSpace(r.stdout) != "mlflowaccesstoken/cli3: renewal requested" {
		t.Errorf("renew --all --wait=false:\n%s", r)
	}

	// The token in the Secret now (renew -A rotated it again, under a second ago).
	second = secretToken(getSecret(t, ns1, "cli"))
	r = mustPlugin(t, "revoke", "cli", "-n", ns1)
	if !strings.Contains(r.stdout, "mlflowaccesstoken/cli: revoked and renewed: new token") {
		t.Fatalf("revoke output: %s", r)
	}
	if introspect(t, second) {
		t.Error("the revoked token is still active at Keycloak")
	}
	third := secretToken(getSecret(t, ns1, "cli"))
	if third == second || !introspect(t, third) {
		t.Error("revoke did not put a new, active token into the Secret")
	}
	if get(t, ns1, "cli").Status.LastRevocationRequest == "" {
		t.Error("revocation request not recorded in status")
	}
	expectExit(t, exitNotFound, "revoke", "nosuch", "-n", ns1)

	// The operator acts but cannot obtain a token: renew says why instead of waiting it out.
	s := getSecret(t, ns1, "kc-cli2")
	s.Data["client-secret"] = []byte("now-wrong-3b9e")
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	r = expectExit(t, exitError, "renew", "cli2", "-n", ns1, "--timeout", "60s")
	if !strings.Contains(r.stderr, "could not obtain a new token: "+authv1alpha1.ReasonInvalidClientCredentials) {
		t.Errorf("renew with a broken client: %s", r)
	}
	noSecretsIn(t, r.stdout+r.stderr, first, second, third, clientSecret, "now-wrong-3b9e")
	for _, x := range [][2]string{{ns1, "cli"}, {ns1, "cli2"}, {ns2, "cli3"}} {
		deleteAndWait(t, get(t, x[0], x[1]), 30*time.Second)
	}
}

// Usage errors exit 2 (an unknown subcommand is a usage error, not a kubeconfig error), --help
// exits 0 on every level, version and completion work.
func TestPluginUsageHelpVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"nosuch"}, {"lst"}, {"list", "extra"}, {"list", "--bogus"}, {"inspect"}, {"inspect", "a", "b"},
		{"renew"}, {"renew", "a", "-l", "x=y"}, {"renew", "--all", "-l", "x=y"}, {"revoke", "-A", "a"},
		{"bootstrap"}, {"list", "-o", "xml"}, {"list", "-l", "a=(b"}, {"inspect", "a", "-o", "wide"}, {"version", "extra"},
	} {
		r := expectExit(t, exitUsage, args...)
		if !strings.Contains(r.stderr, "See 'kubectl mlflow-token") {
			t.Errorf("%v: no pointer to --help: %s", args, r)
		}
		if strings.Contains(r.stderr, "kubeconfig") || strings.Contains(r.stderr, "/nonexistent") {
			t.Errorf("%v: a usage error reported as a kubeconfig problem: %s", args, r)
		}
	}
	if r := expectExit(t, exitUsage, "lst"); !strings.Contains(r.stderr, "Did you mean this?\n\tlist") {
		t.Errorf("no suggestion: %s", r)
	}

	for _, c := range []struct {
		args      []string
		exitCodes bool // the help lists the exit codes
	}{
		{nil, true}, {[]string{"list"}, true}, {[]string{"inspect"}, true}, {[]string{"renew"}, true}, {[]string{"revoke"}, true},
		{[]string{"bootstrap"}, true}, {[]string{"version"}, false}, {[]string{"completion"}, false}, {[]string{"completion", "bash"}, false},
	} {
		r := expectExit(t, exitOK, append(c.args, "--help")...)
		if !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%v --help: %s", c.args, r)
		}
		if c.exitCodes && !strings.Contains(r.stdout, "Exit codes:") {
			t.Errorf("%v --help does not document the exit codes:\n%s", c.args, r.stdout)
		}
	}
	if r := mustPlugin(t, "help", "bootstrap"); !strings.Contains(r.stdout, "Device Authorization Grant") {
		t.Errorf("help bootstrap: %s", r)
	}
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		if r := mustPlugin(t, "completion", sh); !strings.Contains(r.stdout, "kubectl-mlflow_token") {
			t.Errorf("completion %s does not complete the plugin binary:\n%.300s", sh, r.stdout)
		}
	}

	// version: the plugin's, and the operator's from its Deployment's labels.
	r := mustPlugin(t, "version", "--client")
	if !strings.HasPrefix(r.stdout, "Plugin version: v") || strings.Contains(r.stdout, "Operator") {
		t.Errorf("version --client: %s", r)
	}
	ns := newNamespace(t)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "mlflow-token-operator", Namespace: ns,
			Labels: map[string]string{"app.kubernetes.io/name": "mlflow-token-operator", "app.kubernetes.io/version": "v9.8.7"}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "example.com/op:v9.8.7"}}},
			},
		},
	}
	create(t, dep)
	defer func() { _ = k8s.Delete(context.Background(), dep) }()
	r = mustPlugin(t, "version")
	if !strings.Contains(r.stdout, "Operator version: v9.8.7 (Deployment "+ns+"/mlflow-token-operator)") {
		t.Errorf("version: %s", r)
	}
	var v struct {
		Plugin struct {
			Version string `json:"version"`
		} `json:"plugin"`
		Operator struct {
			Versions map[string]string `json:"versions"`
		} `json:"operator"`
	}
	raw := mustPlugin(t, "version", "-o", "json").stdout
	if err := json.Unmarshal([]byte(raw), &v); err != nil || v.Plugin.Version == "" || v.Operator.Versions[ns+"/mlflow-token-operator"] != "v9.8.7" {
		t.Errorf("version -o json (%v): %s", err, raw)
	}
	t.Logf("plugin build took %s", pluginBuild.took.Round(time.Millisecond))
}
