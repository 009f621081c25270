// Package tenancy attacks the operator as a tenant would: a person (impersonated through the real
// API server's RBAC) with `edit` in their own namespace only, the normal grant of a team. Each
// attack edits, forges, replays or redirects something that tenant may write, and must end in a
// refused request or a re-issue with a clear condition or event, with nothing sent to a host
// outside the allow-list, no token of another namespace redeemed or revoked, and no moment with
// an expired token under Ready=True. Requests are counted at the wire: Keycloak sits behind a
// recording HTTPS proxy, and the attacker's host is a server of its own.
//
// Real parts: envtest's etcd and kube-apiserver (RBAC and impersonation enforced), Keycloak
// 26.7.3, the operator in-process under the identity of its generated ClusterRole, with
// --allowed-keycloak-hosts=127.0.0.1 and plain HTTP refused.
package tenancy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/manager"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

const (
	teamA      = "team-a" // the tenant's namespace
	teamB      = "team-b" // another team's: the victim
	platformNS = testenv.OperatorNamespace
	tenantUser = "alice@team-a"
	operatorID = "mlflow-token-operator"
	issuerName = "platform"

	realm        = "mlflow"
	clientID     = "mlflow-operator"
	clientSecret = "mlflowOperatorTestSecret0001"
)

var (
	servers  *testenv.Servers
	admin    client.Client // the API server's administrator
	tenant   client.Client // alice: edit in team-a only
	proxy    *countingProxy
	attacker *attackerServer
	pki      testenv.PKI
	auditLog string
	// stopOperator stops the operator started by TestMain; startMain starts it again.
	stopOperator func()
	opCfg        *rest.Config
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	work, err := os.MkdirTemp("", "mlflow-token-tenancy-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(work)
	logf, err := os.Create(filepath.Join(work, "operator.log"))
	if err != nil {
		return fail(err)
	}
	ctrl.SetLogger(manager.SafeLogger(zap.New(zap.WriteTo(logf), zap.UseDevMode(true), zap.Level(zapcore.Level(-2)))))
	if err := testenv.Preflight(); err != nil {
		return fail(err)
	}
	ctx := context.Background()
	if pki, err = testenv.NewPKI(work); err != nil {
		return fail(err)
	}
	auditLog = filepath.Join(work, "audit.log")
	servers, err = testenv.Start(ctx, testenv.Options{
		// Keycloak serves HTTPS itself, so that the issuer it states (from the Host header the proxy
		// passes on, and the scheme) is the proxy's https:// URL.
		Keycloak: keycloak.Options{RealmFiles: []string{filepath.Join("..", "keycloak", "realm-mlflow.json")},
			TLSCertFile: pki.CertFile, TLSKeyFile: pki.KeyFile},
		AuditLogPath: auditLog,
	})
	if err != nil {
		return fail(err)
	}
	defer servers.Stop()
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		return fail(err)
	}
	if proxy, err = startProxy(servers.Keycloak.HTTPSURL(), cert, pki.CAPEM); err != nil {
		return fail(err)
	}
	if attacker, err = startAttacker(); err != nil {
		return fail(err)
	}
	if admin, err = client.New(servers.Config, client.Options{Scheme: scheme.New()}); err != nil {
		return fail(err)
	}
	if err := setUpPlatform(ctx); err != nil {
		return fail(fmt.Errorf("setting up the platform: %w", err))
	}
	if tenant, err = tenantClient(ctx); err != nil {
		return fail(fmt.Errorf("setting up the tenant: %w", err))
	}
	if opCfg, err = testenv.OperatorIdentity(ctx, servers.Env, servers.Config, operatorID); err != nil {
		return fail(err)
	}
	if err := startMain(); err != nil {
		return fail(fmt.Errorf("starting the operator: %w", err))
	}
	code := m.Run()
	stopOperator()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "operator log: %s (kept: %s)\n", logf.Name(), keep(work))
	}
	return code
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "FAIL:", err)
	return 1
}

// keep copies the work directory's logs aside when a test failed.
func keep(work string) string {
	dst, err := os.MkdirTemp("", "mlflow-token-tenancy-failed-")
	if err != nil {
		return err.Error()
	}
	for _, f := range []string{"operator.log", "audit.log"} {
		if b, err := os.ReadFile(filepath.Join(work, f)); err == nil {
			_ = os.WriteFile(filepath.Join(dst, f), b, 0o600)
		}
	}
	return dst
}

// operatorOptions are the operator's guardrails as a careful platform sets them: only the
// platform's Keycloak host, no plain HTTP.
func operatorOptions() manager.Options {
	o := testenv.OperatorOptions()
	o.Reconciler.Guardrails.AllowInsecureHTTP = false
	o.Reconciler.Guardrails.AllowedHosts = []string{"127.0.0.1"}
	o.Reconciler.Guardrails.AllowedMLflowHosts = []string{"127.0.0.1"}
	o.Reconciler.ClusterResourceNamespace = platformNS
	o.SkipNameValidation = true
	return o
}

func startMain() error {
	var err error
	stopOperator, err = testenv.StartOperator(context.Background(), opCfg, operatorOptions())
	return err
}

// setUpPlatform creates what the platform team owns: the namespaces, the ClusterKeycloakIssuer
// with its client secret and CA in the operator's namespace.
func setUpPlatform(ctx context.Context) error {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: teamA}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: teamB}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: platformNS, Name: "platform-client"}, StringData: map[string]string{"client-secret": clientSecret}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: platformNS, Name: "keycloak-ca"}, Data: map[string]string{"ca.crt": string(pki.CAPEM)}},
		&authv1alpha1.ClusterKeycloakIssuer{ObjectMeta: metav1.ObjectMeta{Name: issuerName}, Spec: authv1alpha1.ClusterKeycloakIssuerSpec{
			KeycloakIssuerSpec: authv1alpha1.KeycloakIssuerSpec{URL: proxy.URL, Realm: realm,
				ClientAuth: authv1alpha1.IssuerClientAuth{ClientID: clientID, ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "platform-client"}},
				CA:         &authv1alpha1.CASource{ConfigMapRef: &authv1alpha1.ConfigMapKeyRef{Name: "keycloak-ca"}}}}},
	}
	for _, o := range objs {
		if err := admin.Create(ctx, o); err != nil {
			return fmt.Errorf("%T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// tenantClient is alice: Kubernetes' `edit` role in team-a, plus the roles the operator ships for
// aggregation into it. envtest runs no aggregation controller, so `edit` is bound as the roles it
// aggregates (system:aggregate-to-edit and -view, and the operator's), which is what it amounts to.
func tenantClient(ctx context.Context) (client.Client, error) {
	var roles []rbacv1.ClusterRole
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "aggregated_roles.yaml"))
	if err != nil {
		return nil, err
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var r rbacv1.ClusterRole
		if err := yamlUnmarshal([]byte(doc), &r); err != nil {
			return nil, err
		}
		r.Name = "tenancy-" + r.Name
		roles = append(roles, r)
	}
	bind := []string{"system:aggregate-to-edit", "system:aggregate-to-view"}
	for i := range roles {
		if err := admin.Create(ctx, &roles[i]); err != nil {
			return nil, err
		}
		bind = append(bind, roles[i].Name)
	}
	for _, name := range bind {
		if err := admin.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: teamA, Name: "alice-" + strings.ReplaceAll(name, ":", "-")},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: tenantUser}},
		}); err != nil {
			return nil, err
		}
	}
	cfg := rest.CopyConfig(servers.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: tenantUser, Groups: []string{"system:authenticated"}}
	return client.New(cfg, client.Options{Scheme: scheme.New()})
}

// keycloakToken logs a user in through the proxy (as a person would, with the device flow or a
// password), so that the token's issuer is the one the operator uses. Not recorded as the
// operator's.
func keycloakToken(t *testing.T, user, password string) (access, refresh string) {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "client_id": {clientID}, "client_secret": {clientSecret},
		"username": {user}, "password": {password}}
	req, _ := http.NewRequest(http.MethodPost, proxy.URL+"/realms/"+realm+"/protocol/openid-connect/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Tenancy-Test", "1")
	resp, err := httpsClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var tok struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if resp.StatusCode != http.StatusOK || jsonUnmarshal(body, &tok) != nil {
		t.Fatalf("logging %s in: %s %s", user, resp.Status, body)
	}
	return tok.AccessToken, tok.RefreshToken
}

// active asks Keycloak (introspection, through the proxy: the token's issuer) whether a token
// is active. Not recorded as the operator's.
func active(t *testing.T, token, hint string) bool {
	t.Helper()
	form := url.Values{"client_id": {clientID}, "client_secret": {clientSecret}, "token": {token}, "token_type_hint": {hint}}
	req, _ := http.NewRequest(http.MethodPost, proxy.URL+"/realms/"+realm+"/protocol/openid-connect/token/introspect", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Tenancy-Test", "1")
	resp, err := httpsClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		Active *bool `json:"active"`
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || jsonUnmarshal(body, &res) != nil || res.Active == nil {
		t.Fatalf("introspection: %s %s", resp.Status, body)
	}
	return *res.Active
}

func httpsClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.CAPEM)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}
