package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/mlflowserver"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

const (
	// jobDuration: the plugin job must outlive three token lifetimes.
	jobDuration = 3*tokenLifespan + 10*time.Second
	jobInterval = 3 * time.Second
)

// TestPluginPytest runs the client plugin's own test suite (clients/python/tests) in the venv,
// so that `make test` fails when it fails.
func TestPluginPytest(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(filepath.Join(venv, "bin", "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "clients/python")
	cmd.Dir = repoRoot
	cmd.Env = mlflowserver.CleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pytest clients/python failed: %v\n%s", err, out)
	}
	t.Logf("pytest clients/python: %s", lastLine(string(out)))
}

// TestTrainingJobAcrossRotations is issue 6's end-to-end scenario.
func TestTrainingJobAcrossRotations(t *testing.T) {
	t.Parallel()
	dumpOnFailure(t)
	begin := time.Now()
	ctx := context.Background()
	t.Logf("versions: %s", versions)
	t.Logf("servers (API server, Keycloak, MLflow) started in %s; MLflow at %s with %s",
		startup.Round(time.Millisecond), mlflowSrv.URL, strings.Join(redactEnv(mlflowSrv.Env), " "))

	// --- The operator issues the token -----------------------------------------------------
	ns := newNamespace(t)
	if err := k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "kc-client", Namespace: ns},
		StringData: map[string]string{"client-secret": clientSecret},
	}); err != nil {
		t.Fatal(err)
	}
	obj := &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Name: "training", Namespace: ns},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			Keycloak: &authv1alpha1.KeycloakSpec{
				URL: kcServer.URL(), Realm: realm, ClientID: clientID,
				ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "kc-client", Key: "client-secret"},
			},
			Grant:  authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
			MLflow: &authv1alpha1.MLflowSpec{TrackingURI: mlflowSrv.URL},
		},
	}
	if err := k8s.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, obj.Name, 60*time.Second)
	secretKey := types.NamespacedName{Namespace: ns, Name: obj.SecretNameOrDefault()}

	// --- The kubelet's stand-in mirrors the Secret into a directory ------------------------
	delay := 2 * time.Second
	if v := os.Getenv("E2E_PROJECTION_DELAY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("E2E_PROJECTION_DELAY: %v", err)
		}
		delay = d
	}
	proj := startProjection(ctx, t, k8s, secretKey, filepath.Join(t.TempDir(), "mlflow"), delay)
	testenv.Eventually(t, 10*time.Second+delay, "the first projection", func() (bool, string) {
		return len(proj.Writes()) > 0, "no write yet"
	})
	for _, k := range []string{tokensecret.KeyToken, tokensecret.KeyTrackingURI, tokensecret.KeyExpiresAt} {
		if target, err := os.Readlink(filepath.Join(proj.Dir, k)); err != nil || target != filepath.Join("..data", k) {
			t.Fatalf("projected %s: want a symlink to ..data/%s, got %q, %v", k, k, target, err)
		}
	}

	// --- The token is what mlflow-oidc-auth needs ------------------------------------------
	tok := secretToken(t, secretKey)
	claims := jwtClaims(t, tok)
	t.Logf("token claims: iss=%v aud=%v preferred_username=%v groups=%v lifetime=%vs",
		claims["iss"], claims["aud"], claims["preferred_username"], claims["groups"], num(claims["exp"])-num(claims["iat"]))
	if claims["iss"] != kcServer.URL()+"/realms/"+realm || !containsAny(claims["aud"], audience) ||
		!containsAny(claims["groups"], usersGroup) || claims["preferred_username"] != saUsername {
		t.Fatalf("the operator's token lacks what mlflow-oidc-auth checks: %v", claims)
	}
	if got := time.Duration(num(claims["exp"])-num(claims["iat"])) * time.Second; got != tokenLifespan {
		t.Fatalf("token lifetime %s, want the fixture's %s", got, tokenLifespan)
	}

	// --- Permission through mlflow-oidc-auth's own API --------------------------------------
	admin := adminToken(t)
	const expName = "e2e-training"
	var created struct {
		ExperimentID string `json:"experiment_id"`
	}
	if err := json.Unmarshal(mlflowSrv.MustCall(t, "POST", "/api/2.0/mlflow/experiments/create", admin, map[string]string{"name": expName}), &created); err != nil || created.ExperimentID == "" {
		t.Fatalf("experiment create by admin: %v %+v", err, created)
	}
	expID := created.ExperimentID
	getPath := "/api/2.0/mlflow/experiments/get?experiment_id=" + url.QueryEscape(expID)
	// The service account's first bearer request provisions its MLflow user (group mlflow_users);
	// it has no permission on the admin's experiment yet.
	if status, b := mlflowSrv.Call(t, "GET", getPath, tok, nil); status != http.StatusForbidden {
		t.Fatalf("before the grant the service account should get 403 on the experiment, got HTTP %d: %s", status, b)
	}
	permPath := "/api/2.0/mlflow/permissions/users/" + url.PathEscape(saUsername) + "/experiments/" + url.PathEscape(expID)
	mlflowSrv.MustCall(t, "POST", permPath, adminToken(t), map[string]string{"permission": "EDIT"})
	t.Logf("granted EDIT on experiment %s to %s: POST %s", expID, saUsername, permPath)
	testenv.Eventually(t, 15*time.Second, "the grant to take effect", func() (bool, string) {
		status, b := mlflowSrv.Call(t, "GET", getPath, secretToken(t, secretKey), nil)
		return status == http.StatusOK, fmt.Sprintf("HTTP %d: %s", status, b)
	})

	// --- The seed guide's REST calls with the token from the Secret -------------------------
	tok = secretToken(t, secretKey)
	var search struct {
		Experiments []struct {
			Name string `json:"name"`
		} `json:"experiments"`
	}
	// The guide sends `-d '{}'`; MLflow 3.17 refuses that (max_results defaults to 0 → 400), so
	// the call that must work names max_results.
	if status, b := mlflowSrv.Call(t, "POST", "/api/2.0/mlflow/experiments/search", tok, map[string]any{}); status != http.StatusOK {
		t.Logf("note: experiments/search with the seed guide's literal body {}: HTTP %d: %s", status, b)
	}
	if err := json.Unmarshal(mlflowSrv.MustCall(t, "POST", "/api/2.0/mlflow/experiments/search", tok, map[string]any{"max_results": 100}), &search); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(search.Experiments, func(e struct {
		Name string `json:"name"`
	}) bool {
		return e.Name == expName
	}) {
		t.Fatalf("experiments/search does not list %s: %+v", expName, search.Experiments)
	}
	mlflowSrv.MustCall(t, "GET", getPath, tok, nil)
	mlflowSrv.MustCall(t, "POST", "/api/2.0/mlflow/runs/search", tok, map[string]any{"experiment_ids": []string{expID}})
	mlflowSrv.MustCall(t, "POST", "/api/2.0/mlflow/experiments/create", tok, map[string]string{"name": "my-new-experiment"})
	t.Logf("seed guide REST calls with the Secret's token: experiments/search, experiments/get, runs/search, experiments/create: all 200")

	// --- Two training jobs side by side ----------------------------------------------------
	stockToken := secretToken(t, secretKey)
	stockExp := time.Unix(int64(num(jwtClaims(t, stockToken)["exp"])), 0)
	var stockFirst401 time.Duration
	writesBefore := len(proj.Writes())
	var wg sync.WaitGroup
	var plugin, stock jobResult
	wg.Add(2)
	go func() {
		defer wg.Done()
		plugin = runJob(t, "plugin", expName, jobDuration, []string{
			"MLFLOW_TRACKING_AUTH=token-file",
			"MLFLOW_TRACKING_TOKEN_FILE=" + filepath.Join(proj.Dir, tokensecret.KeyToken),
			// MLFLOW_TRACKING_URI comes from the projected Secret (configure()).
		})
	}()
	go func() {
		defer wg.Done()
		// envFrom the Secret: both variables fixed at container start.
		stock = runJob(t, "stock", expName, jobDuration, []string{
			"MLFLOW_TRACKING_TOKEN=" + stockToken,
			"MLFLOW_TRACKING_URI=" + mlflowSrv.URL,
		})
	}()
	wg.Wait()
	jobsEnd := time.Now()

	// The plugin job: every call succeeded, across more than three token lifetimes.
	rotationsProjected := len(proj.Writes()) - writesBefore
	if plugin.err != nil || plugin.FirstFailure != nil {
		t.Errorf("plugin job failed: %v; first failure %+v\n%s", plugin.err, plugin.FirstFailure, plugin.output)
	}
	if plugin.Elapsed < (3 * tokenLifespan).Seconds() {
		t.Errorf("plugin job ran %.1fs, want more than three token lifetimes (%s)", plugin.Elapsed, 3*tokenLifespan)
	}
	if plugin.MetricPoints != plugin.Steps || plugin.Steps == 0 {
		t.Errorf("plugin job logged %d steps but the server has %d metric points", plugin.Steps, plugin.MetricPoints)
	}
	if rot := len(plugin.Tokens) - 1; rot < 3 {
		t.Errorf("plugin job saw %d distinct tokens (%d rotations), want at least 4 (3 rotations) in %.0fs", len(plugin.Tokens), rot, plugin.Elapsed)
	}
	t.Logf("plugin job: %.1fs, %d calls all OK, %d steps (metric history has %d), lived through %d token rotations (%d distinct tokens sent; %d Secret updates projected meanwhile, delay %s)",
		plugin.Elapsed, len(plugin.Calls), plugin.Steps, plugin.MetricPoints, len(plugin.Tokens)-1, len(plugin.Tokens), rotationsProjected, delay)

	// The stock job: fails with 401 once its captured token expires.
	if stock.err != nil {
		t.Errorf("stock job: %v\n%s", stock.err, stock.output)
	}
	if ff := stock.FirstFailure; ff == nil {
		t.Errorf("stock job never failed in %.0fs although its token expired at %s", stock.Elapsed, stockExp.Format(time.RFC3339))
	} else {
		failAt, started := unixFloat(ff.Wall), unixFloat(stock.StartedWall)
		if ff.Status == nil || *ff.Status != http.StatusUnauthorized {
			t.Errorf("stock job's first failure is not a 401: %+v", ff)
		}
		if failAt.Before(stockExp.Add(-time.Second)) {
			t.Errorf("stock job failed at %s, before its token expired (%s): %+v", failAt.Format(time.RFC3339), stockExp.Format(time.RFC3339), ff)
		}
		okBefore := 0
		for _, c := range stock.Calls {
			if c.OK {
				okBefore++
			}
		}
		stockFirst401 = failAt.Sub(started)
		t.Logf("stock job (MLFLOW_TRACKING_TOKEN captured at start, token had %.1fs left): %d calls OK, then HTTP %d %.1fs after the job started (%.1fs after its token's exp): %s",
			stockExp.Sub(started).Seconds(), okBefore, deref(ff.Status), stockFirst401.Seconds(), failAt.Sub(stockExp).Seconds(), ff.What)
	}

	// --- Deleting the resource: no fresh token, and the last one dies at its expiry ---------
	// The Secret's token right before the deletion is the last one ever produced; the
	// projection may still write it (delay) but must write nothing else.
	last := secretToken(t, secretKey)
	lastExp := time.Unix(int64(num(jwtClaims(t, last)["exp"])), 0)
	writesAtDelete := len(proj.Writes())
	deleteAndWait(t, obj, 60*time.Second)
	testenv.Eventually(t, 10*time.Second, "the Secret to be deleted", func() (bool, string) {
		err := k8s.Get(ctx, secretKey, &corev1.Secret{})
		return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
	})
	if time.Until(lastExp) > 2*time.Second {
		// mlflow-oidc-auth validates JWTs locally: the operator's revocation at Keycloak does not
		// reach it, so the token keeps working until it expires.
		status, b := mlflowSrv.Call(t, "POST", "/api/2.0/mlflow/experiments/search", last, map[string]any{"max_results": 10})
		t.Logf("after deletion (token revoked at Keycloak by the operator), %.0fs before its exp: HTTP %d", time.Until(lastExp).Seconds(), status)
		if status != http.StatusOK {
			t.Logf("note: the deleted resource's last token was refused before its expiry: %s", b)
		}
	}
	time.Sleep(time.Until(lastExp.Add(1500 * time.Millisecond)))
	if status, b := mlflowSrv.Call(t, "POST", "/api/2.0/mlflow/experiments/search", last, map[string]any{"max_results": 10}); status != http.StatusUnauthorized {
		t.Errorf("the last token after its expiry: HTTP %d, want 401: %s", status, b)
	}
	for _, w := range proj.Writes()[writesAtDelete:] {
		if w.TokenHash != shortHash([]byte(last)) {
			t.Errorf("a token other than the last one was projected after the deletion, at %s", w.At.Format(time.RFC3339))
		}
	}
	if got := proj.Token(t); got != last {
		t.Errorf("the projected token changed after deletion")
	}
	if err := k8s.Get(ctx, secretKey, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Secret is back after deletion: %v", err)
	}
	t.Logf("after deletion: Secret gone, no new token in %.0fs, the last token got 401 once expired (%s)",
		time.Since(jobsEnd).Seconds(), lastExp.Format(time.RFC3339))
	t.Logf("summary: versions [%s]; plugin job %.0fs with %d rotations, all calls OK; stock job first %d after %.1fs; e2e test body %s (servers started in %s)",
		versions, plugin.Elapsed, len(plugin.Tokens)-1, deref(stock.firstStatus()), stockFirst401.Seconds(), time.Since(begin).Round(time.Second), startup.Round(time.Second))
}

// --- The training job ---------------------------------------------------------------------

type jobCall struct {
	T      float64 `json:"t"`    // seconds since the job's first MLflow call was prepared
	Wall   float64 `json:"wall"` // Unix time the call started
	What   string  `json:"what"`
	OK     bool    `json:"ok"`
	Status *int    `json:"status"`
	Error  string  `json:"error"`
}

type jobResult struct {
	MLflowVersion string    `json:"mlflow_version"`
	TrackingURI   string    `json:"tracking_uri"`
	Calls         []jobCall `json:"calls"`
	Tokens        []string  `json:"tokens"`
	FirstFailure  *jobCall  `json:"first_failure"`
	Elapsed       float64   `json:"elapsed"`
	StartedWall   float64   `json:"started_wall"` // Unix time the process started
	Steps         int       `json:"steps"`
	MetricPoints  int       `json:"metric_points"`

	err    error
	output string
}

func (r jobResult) firstStatus() *int {
	if r.FirstFailure == nil {
		return nil
	}
	return r.FirstFailure.Status
}

func unixFloat(f float64) time.Time {
	return time.Unix(0, int64(f*float64(time.Second)))
}

func runJob(t *testing.T, mode, experiment string, duration time.Duration, env []string) jobResult {
	out := filepath.Join(t.TempDir(), mode+".json")
	ctx, cancel := context.WithTimeout(context.Background(), duration+90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(venv, "bin", "python"), "training_job.py",
		"--mode", mode, "--experiment", experiment,
		"--duration", fmt.Sprint(duration.Seconds()), "--interval", fmt.Sprint(jobInterval.Seconds()),
		"--out", out)
	cmd.Env = append(mlflowserver.CleanEnv(), env...)
	cmd.Env = append(cmd.Env, "MLFLOW_HTTP_REQUEST_TIMEOUT=20", "MLFLOW_HTTP_REQUEST_MAX_RETRIES=2", "PYTHONUNBUFFERED=1")
	b, runErr := cmd.CombinedOutput()
	var r jobResult
	r.output = tail(string(b), 40)
	raw, err := os.ReadFile(out)
	if err != nil {
		r.err = fmt.Errorf("no result file (exit: %v): %w", runErr, err)
		return r
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		r.err = err
		return r
	}
	r.output = tail(string(b), 40)
	if runErr != nil && mode == "plugin" {
		r.err = runErr
	}
	return r
}

// --- Helpers ------------------------------------------------------------------------------

func secretToken(t *testing.T, key types.NamespacedName) string {
	t.Helper()
	s := &corev1.Secret{}
	if err := k8s.Get(context.Background(), key, s); err != nil {
		t.Fatal(err)
	}
	tok := string(s.Data[tokensecret.KeyToken])
	if tok == "" {
		t.Fatalf("Secret %s has no token", key)
	}
	return tok
}

func waitReady(t *testing.T, ns, name string, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, name+" Ready", func() (bool, string) {
		obj := &authv1alpha1.MLflowAccessToken{}
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, obj); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(obj.Status.Conditions, authv1alpha1.ConditionReady)
		if c == nil {
			return false, "no Ready condition"
		}
		return c.Status == metav1.ConditionTrue && c.Reason == authv1alpha1.ReasonTokenValid, c.Reason + ": " + c.Message
	})
}

func deleteAndWait(t *testing.T, obj *authv1alpha1.MLflowAccessToken, timeout time.Duration) {
	t.Helper()
	if err := k8s.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, "deletion of "+obj.Name, func() (bool, string) {
		err := k8s.Get(context.Background(), types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}, &authv1alpha1.MLflowAccessToken{})
		return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
	})
}

func jwtClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func containsAny(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case []any:
		for _, e := range x {
			if e == want {
				return true
			}
		}
	}
	return false
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func redactEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if strings.Contains(k, "SECRET") {
			kv = k + "=<redacted>"
		}
		out = append(out, kv)
	}
	return out
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
