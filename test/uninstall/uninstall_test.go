package uninstall

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/uninstall"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if name == "" {
		ns.GenerateName = "uninstall-"
	}
	if err := admin.Create(testCtx, ns); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(testCtx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "kc-client", Namespace: ns.Name},
		StringData: map[string]string{"client-secret": clientSecret}}); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// token creates an MLflowAccessToken for the test realm's client.
func token(t *testing.T, ns, name string, mutate ...func(*authv1alpha1.MLflowAccessToken)) {
	t.Helper()
	obj := &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			Keycloak: &authv1alpha1.KeycloakSpec{URL: kcServer.URL(), Realm: realm, ClientID: clientID,
				ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "kc-client", Key: "client-secret"}},
			Grant: authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		},
	}
	for _, m := range mutate {
		m(obj)
	}
	if err := admin.Create(testCtx, obj); err != nil {
		t.Fatal(err)
	}
}

// passwordGrant makes a token a Password grant for the realm's user, with a refresh chain and a
// Keycloak session.
func passwordGrant(t *testing.T, ns string) func(*authv1alpha1.MLflowAccessToken) {
	t.Helper()
	if err := admin.Create(testCtx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ursula", Namespace: ns},
		StringData: map[string]string{"username": "ursula", "password": "ursula-password"}}); err != nil {
		t.Fatal(err)
	}
	return func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Grant = authv1alpha1.GrantSpec{Type: authv1alpha1.GrantPassword, PasswordSecretRef: &authv1alpha1.UserCredentialsRef{Name: "ursula"}}
	}
}

// issued waits until the resource is Ready and returns it with the access token in its Secret.
func issued(t *testing.T, ns, name string) (*authv1alpha1.MLflowAccessToken, string) {
	t.Helper()
	obj := &authv1alpha1.MLflowAccessToken{}
	var tok string
	testenv.Eventually(t, time.Minute, name+" Ready", func() (bool, string) {
		if err := admin.Get(testCtx, types.NamespacedName{Namespace: ns, Name: name}, obj); err != nil {
			return false, err.Error()
		}
		if !meta.IsStatusConditionTrue(obj.Status.Conditions, authv1alpha1.ConditionReady) {
			return false, "not Ready"
		}
		s := &corev1.Secret{}
		if err := admin.Get(testCtx, types.NamespacedName{Namespace: ns, Name: obj.SecretNameOrDefault()}, s); err != nil {
			return false, err.Error()
		}
		tok = string(s.Data[tokensecret.KeyToken])
		return tok != "" && controllerutil.ContainsFinalizer(obj, uninstall.Finalizer), "no token or no finalizer yet"
	})
	return obj, tok
}

func active(t *testing.T, tok, hint string) bool {
	t.Helper()
	a, err := keycloak.Introspect(kcServer.URL(), realm, clientID, clientSecret, tok, hint)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func secretExists(t *testing.T, ns, name string) bool {
	t.Helper()
	err := admin.Get(testCtx, types.NamespacedName{Namespace: ns, Name: name}, &corev1.Secret{})
	if err != nil && !notFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// The chart's default: every resource is deleted, the running operator revokes each token (the
// access tokens of two client-credentials grants and a Password grant's refresh chain: its
// session ends) and deletes its Secrets, and the command returns when they are gone. A resource
// that also carries someone else's finalizer is released by the operator and left to its owner.
func TestRevokeModeRevokesEveryToken(t *testing.T) {
	ns1, ns2 := newNamespace(t, ""), newNamespace(t, "")
	token(t, ns1, "cc-a")
	token(t, ns2, "cc-b")
	token(t, ns1, "password", passwordGrant(t, ns1))
	token(t, ns2, "guarded", func(o *authv1alpha1.MLflowAccessToken) { o.Finalizers = []string{"example.com/guard"} })

	tokens := map[string]string{}
	var refresh string
	for _, k := range []struct{ ns, name string }{{ns1, "cc-a"}, {ns2, "cc-b"}, {ns1, "password"}, {ns2, "guarded"}} {
		obj, tok := issued(t, k.ns, k.name)
		tokens[k.ns+"/"+k.name] = tok
		if k.name == "password" {
			st := &corev1.Secret{}
			if err := admin.Get(testCtx, types.NamespacedName{Namespace: k.ns, Name: tokensecret.StateSecretName(obj)}, st); err != nil {
				t.Fatal(err)
			}
			refresh = string(st.Data[tokensecret.KeyRefreshToken])
		}
	}
	if refresh == "" || !active(t, refresh, "refresh_token") {
		t.Fatal("the Password grant has no active refresh token to begin with")
	}
	for k, tok := range tokens {
		if !active(t, tok, "") {
			t.Fatalf("%s: the token is not active to begin with", k)
		}
	}

	c, err := client.New(revokeCfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := uninstall.Run(testCtx, c, uninstall.Options{Mode: uninstall.ModeRevoke, Timeout: 2 * time.Minute, PollInterval: 250 * time.Millisecond}, testr.New(t))
	if err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	t.Logf("revoked and released %d resources in %s", len(res.Deleted), time.Since(start).Round(time.Millisecond))
	for k := range tokens {
		if !slices.Contains(res.Deleted, k) {
			t.Errorf("%s was not deleted (deleted: %v)", k, res.Deleted)
		}
	}
	if len(res.Orphaned) != 0 {
		t.Errorf("orphaned %v: the operator was running and should have revoked everything", res.Orphaned)
	}

	// Every token is inactive at Keycloak: revoked, since they live 10 minutes.
	for k, tok := range tokens {
		if active(t, tok, "") {
			t.Errorf("%s: the access token is still active after uninstall", k)
		}
	}
	if active(t, refresh, "refresh_token") {
		t.Error("the Password grant's refresh token is still active: its session was not ended")
	}
	// The resources and their Secrets are gone, except the guarded one, which waits for its
	// other finalizer, without ours.
	for _, k := range []struct{ ns, name string }{{ns1, "cc-a"}, {ns2, "cc-b"}, {ns1, "password"}, {ns2, "guarded"}} {
		obj := &authv1alpha1.MLflowAccessToken{}
		err := admin.Get(testCtx, types.NamespacedName{Namespace: k.ns, Name: k.name}, obj)
		switch {
		case k.name == "guarded" && err == nil:
			if controllerutil.ContainsFinalizer(obj, uninstall.Finalizer) || obj.DeletionTimestamp.IsZero() {
				t.Errorf("guarded: finalizers %v, deleting %v: want it deleting, with only its other finalizer", obj.Finalizers, !obj.DeletionTimestamp.IsZero())
			}
			controllerutil.RemoveFinalizer(obj, "example.com/guard")
			if err := admin.Update(testCtx, obj); err != nil {
				t.Fatal(err)
			}
		case !notFound(err):
			t.Errorf("%s/%s still exists after uninstall (%v)", k.ns, k.name, err)
		}
		if secretExists(t, k.ns, k.name) {
			t.Errorf("the Secret of %s/%s survived", k.ns, k.name)
		}
	}
}

// Without a running operator nothing can revoke: at the timeout the command releases what is
// left, so that no namespace hangs, and fails naming it. The token is still valid: it was not
// revoked, and the command says so rather than pretending.
func TestRevokeModeReleasesWhatIsLeftAtTheTimeout(t *testing.T) {
	ns := newNamespace(t, "")
	token(t, ns, "left")
	_, tok := issued(t, ns, "left")
	operator.stop()
	defer func() {
		if err := operator.start(); err != nil {
			t.Fatalf("restarting the operator: %v", err)
		}
	}()

	c, err := client.New(revokeCfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := uninstall.Run(testCtx, c, uninstall.Options{Mode: uninstall.ModeRevoke, Timeout: 5 * time.Second, PollInterval: 250 * time.Millisecond}, testr.New(t))
	if !errors.Is(err, uninstall.ErrNotRevoked) || !strings.Contains(err.Error(), ns+"/left") {
		t.Fatalf("uninstall without an operator: got %v, want ErrNotRevoked naming %s/left", err, ns)
	}
	if !slices.Contains(res.Orphaned, ns+"/left") {
		t.Errorf("orphaned %v, want %s/left", res.Orphaned, ns)
	}
	testenv.Eventually(t, 10*time.Second, "the released resource to go", func() (bool, string) {
		err := admin.Get(testCtx, types.NamespacedName{Namespace: ns, Name: "left"}, &authv1alpha1.MLflowAccessToken{})
		return notFound(err), "still there"
	})
	// Its Secrets carry no finalizer of the operator either (envtest runs no garbage collector:
	// they stay, without anything that would make a namespace deletion hang).
	var secrets corev1.SecretList
	if err := admin.List(testCtx, &secrets, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		if controllerutil.ContainsFinalizer(&s, uninstall.Finalizer) {
			t.Errorf("Secret %s/%s keeps the operator's finalizer after the timeout", ns, s.Name)
		}
	}
	if !active(t, tok, "") {
		t.Error("the token is inactive, yet nothing revoked it")
	}
}

// uninstall.revokeTokens=false, through the operator binary with the chart's orphan hook
// identity (namespaced Roles) and arguments: it scales the operator's Deployment to zero, waits
// for its pods to go, then removes the finalizer. Resources, Secrets and tokens stay; an operator
// started again adopts them (the re-install this mode is for).
func TestOrphanModeKeepsResourcesForAReinstall(t *testing.T) {
	token(t, newNamespaceOnce(t, orphanNSA), "kept-a")
	token(t, newNamespaceOnce(t, orphanNSB), "kept-b")
	_, tokA := issued(t, orphanNSA, "kept-a")
	_, tokB := issued(t, orphanNSB, "kept-b")

	// The operator's Deployment and its pod, as the cluster would have them (envtest runs no
	// controllers: the test plays the Deployment controller and stops the in-process operator
	// when the Deployment is scaled to zero).
	deployName := orphanRelease + "-mlflow-token-operator-controller-manager"
	labels := map[string]string{"app.kubernetes.io/name": "mlflow-token-operator", "app.kubernetes.io/instance": orphanRelease}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: deployName, Namespace: hookNamespace},
		Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "operator"}}}}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: deployName + "-abc", Namespace: hookNamespace, Labels: labels},
		Spec: dep.Spec.Template.Spec}
	for _, o := range []client.Object{dep, pod} {
		if err := admin.Create(testCtx, o); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(testCtx)
	defer cancel()
	stoppedAt := make(chan time.Time, 1)
	go func() {
		for ctx.Err() == nil {
			d := &appsv1.Deployment{}
			if err := admin.Get(ctx, client.ObjectKeyFromObject(dep), d); err == nil && d.Spec.Replicas != nil && *d.Spec.Replicas == 0 {
				operator.stop()
				_ = admin.Delete(ctx, pod, client.GracePeriodSeconds(0))
				stoppedAt <- time.Now()
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	defer func() {
		if err := operator.start(); err != nil {
			t.Fatalf("restarting the operator: %v", err)
		}
	}()

	out, err := exec.Command(manager, "uninstall", "--mode=orphan", "--timeout=1m",
		"--namespaces="+orphanNSA+","+orphanNSB, "--operator-deployment="+hookNamespace+"/"+deployName,
		"--kubeconfig="+orphanKubeconfig, "--zap-encoder=console").CombinedOutput()
	t.Logf("manager uninstall --mode=orphan:\n%s", out)
	if err != nil {
		t.Fatalf("manager uninstall --mode=orphan: %v", err)
	}
	select {
	case <-stoppedAt:
	default:
		t.Fatal("the command finished without scaling the operator's Deployment to zero")
	}

	for _, k := range []struct{ ns, name, tok string }{{orphanNSA, "kept-a", tokA}, {orphanNSB, "kept-b", tokB}} {
		obj := &authv1alpha1.MLflowAccessToken{}
		if err := admin.Get(testCtx, types.NamespacedName{Namespace: k.ns, Name: k.name}, obj); err != nil {
			t.Fatalf("%s/%s: %v", k.ns, k.name, err)
		}
		if controllerutil.ContainsFinalizer(obj, uninstall.Finalizer) || !obj.DeletionTimestamp.IsZero() {
			t.Errorf("%s/%s: finalizers %v, deleting %v: want it kept, without the operator's finalizer", k.ns, k.name, obj.Finalizers, !obj.DeletionTimestamp.IsZero())
		}
		if !secretExists(t, k.ns, k.name) || !active(t, k.tok, "") {
			t.Errorf("%s/%s: the Secret and its valid token should stay", k.ns, k.name)
		}
		// Nor on its Secrets: with no operator to revoke, a namespace deletion must not hang on them.
		for _, n := range []string{k.name, tokensecret.StateSecretName(obj)} {
			s := &corev1.Secret{}
			if err := admin.Get(testCtx, types.NamespacedName{Namespace: k.ns, Name: n}, s); err != nil {
				t.Errorf("Secret %s/%s: %v", k.ns, n, err)
			} else if controllerutil.ContainsFinalizer(s, uninstall.Finalizer) {
				t.Errorf("Secret %s/%s keeps the operator's finalizer", k.ns, n)
			}
		}
	}

	// A new operator adopts them: the finalizer comes back and they stay Ready.
	if err := operator.start(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct{ ns, name string }{{orphanNSA, "kept-a"}, {orphanNSB, "kept-b"}} {
		issued(t, k.ns, k.name)
		obj := &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Namespace: k.ns, Name: k.name}}
		if err := admin.Delete(testCtx, obj); err != nil {
			t.Fatal(err)
		}
	}
}

// newNamespaceOnce creates a namespace that TestMain may already have created (the orphan
// hook's Roles live in it), with the client secret.
func newNamespaceOnce(t *testing.T, name string) string {
	t.Helper()
	if err := admin.Create(testCtx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "kc-client", Namespace: name},
		StringData: map[string]string{"client-secret": clientSecret}}); err != nil {
		t.Fatal(err)
	}
	return name
}
