package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// The Helm release of TestChart.
const (
	chartNS    = "mto-system"
	release    = "mto"
	deployment = release + "-mlflow-token-operator-controller-manager"
	// Namespaces of the tokens: the first token, the failover's and the training jobs'.
	teamNS     = "team-a"
	failoverNS = "failover"
	trainingNS = "training"
)

// TestChart is the operator's life on a cluster, from its Helm chart and its image:
//
//   - install: `helm install` into a namespace enforcing the restricted Pod Security level; the
//     operator pod becomes Ready through its probes;
//   - token: a ClientCredentials MLflowAccessToken against Keycloak (HTTPS, private CA through
//     caBundle) becomes Ready and its Secret rotates;
//   - admission-policies: as the operator's ServiceAccount, a pod's labels or image and a Secret
//     not its own cannot be changed (the chart's ValidatingAdmissionPolicies);
//   - helm test: the chart's probe pod reaches the metrics endpoint (HTTPS, with a token of a
//     ServiceAccount bound to the metrics-reader role);
//   - upgrade: `helm upgrade` to two replicas and debug logs rolls the Deployment; one leader;
//   - workloads, side by side: leader failover by pod deletion and by SIGKILL (takeover times,
//     no double redemption under strict rotation, no expired token in a Secret), and training
//     jobs in pods (the plugin through the mounted Secret; the stock env var failing at expiry);
//   - uninstall: `helm uninstall` runs the pre-delete hook, which revokes every token (checked
//     by introspection), leaves no finalizer, and the namespaces then disappear.
//
// Each step needs the previous ones; the first failure ends the test.
func TestChart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tapLogs(ctx, chartNS, filepath.Join(repoRoot, "bin", "cluster-logs", "pods"))
	steps := []struct {
		name string
		f    func(t *testing.T)
	}{
		{"install", chartInstall},
		{"token", chartToken},
		{"admission-policies", chartAdmissionPolicies}, // in the token step's namespace
		{"helm-test", chartHelmTest},
		{"upgrade", chartUpgrade},
		{"workloads", func(t *testing.T) {
			// Side by side: the jobs run through the failovers (their tokens keep rotating), and
			// the suite is shorter.
			t.Run("failover", func(t *testing.T) { t.Parallel(); testFailover(t, chartNS) })
			t.Run("training-jobs", func(t *testing.T) { t.Parallel(); testTrainingJobs(t) })
		}},
		{"uninstall", chartUninstall},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			// The suites after this one install the operator again: two installations would each
			// take the other's sealed Secrets for edits (SecretContested). Leave none behind.
			if out, err := helmErr("uninstall", release, "--namespace", chartNS, "--wait", "--timeout", "3m"); err != nil {
				t.Logf("helm uninstall after the failure: %v\n%s", err, out)
			}
			t.Fatalf("step %s failed; the later steps need it (pod logs: bin/cluster-logs/pods)", s.name)
		}
	}
}

func chartDir() string { return filepath.Join(repoRoot, "charts", "mlflow-token-operator") }

func chartInstall(t *testing.T) {
	ctx := context.Background()
	if err := theNode.EnsureNamespace(ctx, chartNS, restricted); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The chart's defaults: the image at the chart's appVersion, imported into the node, so no pull.
	out := helm(t, "install", release, chartDir(), "--namespace", chartNS)
	helmDone := time.Since(start)
	pods := waitDeployment(t, chartNS, deployment, 1, 3*time.Minute)
	ready := time.Since(start)
	times.Step("helm install (chart defaults) -> operator pod Ready (probes)", ready)
	t.Logf("helm install returned after %s; the operator pod %s was Ready after %s", helmDone.Round(100*time.Millisecond), pods[0].Name, ready.Round(100*time.Millisecond))
	if !strings.Contains(out, "STATUS: deployed") {
		t.Errorf("helm install output lacks STATUS: deployed:\n%s", out)
	}
	p := pods[0]
	c := p.Spec.Containers[0]
	if c.Image != operatorImage {
		t.Errorf("the operator runs image %s, want %s (the chart's default)", c.Image, operatorImage)
	}
	if st := p.Status.ContainerStatuses[0]; st.RestartCount != 0 {
		t.Errorf("the operator container restarted %d times before it was Ready: %s", st.RestartCount, podState(&p))
	}
	if ptr.Deref(p.Spec.SecurityContext.RunAsUser, 0) != 65532 {
		t.Errorf("the operator pod runs as %v, want 65532", p.Spec.SecurityContext.RunAsUser)
	}
	// With one replica and leader election on, it takes the Lease.
	eventually(t, time.Minute, 250*time.Millisecond, "the operator to take its Lease", func() (bool, string) {
		l, err := lease(ctx, chartNS)
		if err != nil {
			return false, err.Error()
		}
		return holderPod(holderOf(l)) == p.Name, "holder " + holderOf(l)
	})
}

func chartToken(t *testing.T) {
	ctx := context.Background()
	if err := theNode.EnsureNamespace(ctx, teamNS, restricted); err != nil {
		t.Fatal(err)
	}
	createSecret(t, teamNS, "keycloak-client", map[string]string{"client-secret": strictClientSecret})
	start := time.Now()
	obj := createToken(t, teamNS, "team-token", authv1alpha1.MLflowAccessTokenSpec{
		Keycloak: keycloakSpec(realmStrict, strictClientID, "keycloak-client"),
		Grant:    authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		// Rotations every ~10 s, so the test sees several; every token in the Secret has at
		// least 50 s left, which the uninstall step needs to tell revocation from expiry.
		RenewBefore: &metav1.Duration{Duration: strictTokenLifespan - 10*time.Second},
	})
	obj = waitTokenReady(t, teamNS, obj.Name, 2*time.Minute)
	times.Step("MLflowAccessToken created -> Ready (ClientCredentials over HTTPS)", time.Since(start))
	tok := tokenOf(t, obj)
	if iss := jwtClaims(tok)["iss"]; iss != kcURL+"/realms/"+realmStrict {
		t.Errorf("the token's issuer is %v, want %s", iss, kcURL+"/realms/"+realmStrict)
	}
	if active, err := introspect(realmStrict, strictClientID, strictClientSecret, tok, "access_token"); err != nil || !active {
		t.Fatalf("Keycloak says the Secret's token is not active (%v, %v)", active, err)
	}
	d := waitRotations(t, teamNS, obj.Name, 2, 2*time.Minute)
	times.Step("two rotations of the Secret", d)
	if tokenOf(t, obj) == tok {
		t.Fatal("the Secret still holds the first token after two rotations")
	}
}

func chartHelmTest(t *testing.T) {
	start := time.Now()
	// No --logs: the chart deletes a succeeded test pod (hook-succeeded), so there is no log to fetch.
	out, err := helmErr("test", release, "--namespace", chartNS, "--timeout", "3m")
	if err != nil {
		t.Fatalf("helm test: %v\n%s", err, out)
	}
	times.Step("helm test (probe pod -> metrics Service)", time.Since(start))
	if !strings.Contains(out, "Phase:          Succeeded") {
		t.Errorf("helm test output lacks a succeeded test pod:\n%s", out)
	}
}

func chartUpgrade(t *testing.T) {
	ctx := context.Background()
	before, err := lease(ctx, chartNS)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	helm(t, "upgrade", release, chartDir(), "--namespace", chartNS, "--reuse-values",
		"--set", "replicas=2", "--set", "logging.level=debug")
	pods := waitDeployment(t, chartNS, deployment, 2, 3*time.Minute)
	times.Step("helm upgrade (replicas 1->2, log level debug) -> 2 new pods Ready", time.Since(start))
	names := map[string]bool{}
	for _, p := range pods {
		names[p.Name] = true
		if !strings.Contains(strings.Join(p.Spec.Containers[0].Args, " "), "--zap-log-level=debug") {
			t.Errorf("pod %s runs without the upgraded log level: %v", p.Name, p.Spec.Containers[0].Args)
		}
	}
	pdb := &policyv1.PodDisruptionBudget{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: chartNS, Name: deployment}, pdb); err != nil {
		t.Errorf("two replicas should come with a PodDisruptionBudget: %v", err)
	}
	// The rollout replaced the old leader gracefully: one of the new pods leads.
	eventually(t, time.Minute, 250*time.Millisecond, "a new pod to lead", func() (bool, string) {
		l, err := lease(ctx, chartNS)
		if err != nil {
			return false, err.Error()
		}
		return names[holderPod(holderOf(l))], "holder " + holderOf(l)
	})
	after, _ := lease(ctx, chartNS)
	t.Logf("Lease: %s -> %s (transitions %d -> %d)", holderOf(before), holderOf(after),
		ptr.Deref(before.LeaseTransitions, 0), ptr.Deref(after.LeaseTransitions, 0))
	waitRotations(t, teamNS, "team-token", 1, 2*time.Minute)
}

// issued is a token the uninstall must revoke: where it came from, so that Keycloak can be asked.
type issued struct {
	what, realm, clientID, clientSecret, token, hint string
}

func chartUninstall(t *testing.T) {
	ctx := context.Background()
	// Every token the operator holds, in the consumer Secrets and the refresh chains' state
	// Secrets: all active before the uninstall.
	var list authv1alpha1.MLflowAccessTokenList
	if err := k8s.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) == 0 {
		t.Fatal("no MLflowAccessToken before the uninstall: nothing to check")
	}
	// The tokens to revoke are the last ones the Secrets hold when the operator deletes them: a
	// watch sees every version (a rotation can land just before the hook deletes a resource; a
	// token replaced by a rotation is left to expire, since pods may still hold it).
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	last, err := watchSecretData(watchCtx)
	if err != nil {
		t.Fatal(err)
	}
	type origin struct{ what, realm, clientID, clientSecret, secret, key, hint string }
	var origins []origin
	for i := range list.Items {
		obj := &list.Items[i]
		ks := obj.Spec.Keycloak
		if ks == nil {
			t.Fatalf("%s/%s has no spec.keycloak", obj.Namespace, obj.Name)
		}
		cred, err := secretData(ctx, obj.Namespace, ks.ClientSecretRef.Name)
		if err != nil {
			t.Fatal(err)
		}
		secret := string(cred[ks.ClientSecretRef.Key])
		name := obj.Namespace + "/" + obj.Name
		origins = append(origins, origin{name + " access token", ks.Realm, ks.ClientID, secret,
			obj.Namespace + "/" + obj.SecretNameOrDefault(), tokensecret.KeyToken, "access_token"})
		if obj.Spec.Grant.Type != authv1alpha1.GrantClientCredentials {
			origins = append(origins, origin{name + " refresh token (" + string(obj.Spec.Grant.Type) + ")", ks.Realm, ks.ClientID, secret,
				obj.Namespace + "/" + tokensecret.StateSecretName(obj), tokensecret.KeyRefreshToken, "refresh_token"})
		}
	}
	for _, o := range origins {
		tok := last.get(o.secret, o.key)
		if tok == "" {
			t.Fatalf("no %s in Secret %s before the uninstall", o.key, o.secret)
		}
		if active, err := introspect(o.realm, o.clientID, o.clientSecret, tok, o.hint); err != nil || !active {
			t.Fatalf("%s is not active before the uninstall (%v, %v)", o.what, active, err)
		}
	}

	start := time.Now()
	out := helm(t, "uninstall", release, "--namespace", chartNS, "--timeout", "5m")
	times.Step(fmt.Sprintf("helm uninstall (pre-delete hook revokes the tokens of %d resources)", len(list.Items)), time.Since(start))
	checkedAt := time.Now()
	t.Logf("helm uninstall: %s", strings.TrimSpace(out))
	stopWatch()
	if err := last.err(); err != nil {
		t.Fatal(err)
	}
	var tokens []issued
	for _, o := range origins {
		if !last.deleted(o.secret) {
			t.Errorf("Secret %s was not deleted by the uninstall", o.secret)
		}
		tokens = append(tokens, issued{o.what, o.realm, o.clientID, o.clientSecret, last.get(o.secret, o.key), o.hint})
	}

	// Revoked at Keycloak: introspection says inactive. A token already past its expiry proves
	// nothing (it is inactive anyway), so it is only counted as such.
	var checked, expired []string
	for _, tk := range tokens {
		active, err := introspect(tk.realm, tk.clientID, tk.clientSecret, tk.token, tk.hint)
		switch {
		case err != nil:
			t.Errorf("introspecting %s: %v", tk.what, err)
		case active:
			t.Errorf("%s is still active at Keycloak after the uninstall", tk.what)
		case tk.hint == "access_token" && jwtExpiry(tk.token).Before(checkedAt):
			expired = append(expired, tk.what)
		default:
			checked = append(checked, tk.what)
		}
	}
	if len(checked) < len(list.Items) {
		t.Errorf("only %d tokens could prove their revocation (the others expired first: %v); want at least one per resource", len(checked), expired)
	}
	times.Figure("uninstall: %d tokens revoked (inactive at Keycloak before their expiry): %s; %d expired before the check", len(checked), strings.Join(checked, ", "), len(expired))

	// Nothing left with the operator's finalizer, and the operator gone.
	eventually(t, time.Minute, 250*time.Millisecond, "no MLflowAccessToken and no operator pod", func() (bool, string) {
		var left authv1alpha1.MLflowAccessTokenList
		if err := k8s.List(ctx, &left); err != nil {
			return false, err.Error()
		}
		if len(left.Items) > 0 {
			o := left.Items[0]
			return false, fmt.Sprintf("%d left, e.g. %s/%s with finalizers %v", len(left.Items), o.Namespace, o.Name, o.Finalizers)
		}
		pods, err := cs.CoreV1().Pods(chartNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d pods left in %s", len(pods.Items), chartNS)
	})
	secretsLeft, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secretsLeft.Items {
		for _, f := range s.Finalizers {
			if strings.Contains(f, "mlflow-token-operator") {
				t.Errorf("Secret %s/%s keeps the finalizer %s after the uninstall", s.Namespace, s.Name, f)
			}
		}
	}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: chartNS, Name: deployment}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("the operator's Deployment is still there after the uninstall (%v)", err)
	}

	// The namespaces can go: nothing holds them (the real namespace controller deletes their
	// contents, the garbage collector the Secrets owned by deleted resources).
	start = time.Now()
	nss := []string{teamNS, failoverNS, trainingNS, chartNS}
	for _, ns := range nss {
		if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	eventually(t, 3*time.Minute, 250*time.Millisecond, "the namespaces to disappear", func() (bool, string) {
		for _, ns := range nss {
			n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err == nil {
				return false, fmt.Sprintf("namespace %s is %s: %v", ns, n.Status.Phase, n.Status.Conditions)
			}
			if !apierrors.IsNotFound(err) {
				return false, err.Error()
			}
		}
		return true, ""
	})
	times.Step(fmt.Sprintf("%d namespaces deleted -> gone", len(nss)), time.Since(start))

	// crds.keep: the CRDs stay for the next install; the user deletes them (nothing holds them).
	start = time.Now()
	deleteCRDs(t)
	times.Step("CRDs (kept by the chart) deleted -> gone", time.Since(start))
}

// deleteCRDs deletes the operator's CRDs and waits until they are gone.
func deleteCRDs(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	var crds apiextensionsv1.CustomResourceDefinitionList
	if err := k8s.List(ctx, &crds); err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range crds.Items {
		c := &crds.Items[i]
		if c.Spec.Group != authv1alpha1.GroupVersion.Group {
			continue
		}
		names = append(names, c.Name)
		if err := k8s.Delete(ctx, c); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	if len(names) == 0 {
		t.Fatal("no CRD of the operator to delete")
	}
	eventually(t, 2*time.Minute, 250*time.Millisecond, "the CRDs to disappear", func() (bool, string) {
		for _, n := range names {
			err := k8s.Get(ctx, types.NamespacedName{Name: n}, &apiextensionsv1.CustomResourceDefinition{})
			if !apierrors.IsNotFound(err) {
				return false, fmt.Sprintf("CRD %s: %v", n, err)
			}
		}
		return true, ""
	})
}

// restrictedPodSecurity is the securityContext the restricted Pod Security level asks of a
// container (the pod's asks runAsNonRoot and a seccomp profile).
func restrictedPodSecurity() (*corev1.PodSecurityContext, *corev1.SecurityContext) {
	return &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To[int64](65532),
			RunAsGroup:     ptr.To[int64](65532),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}, &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		}
}
