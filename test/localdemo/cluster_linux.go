//go:build linux

// What the node mode installs and creates, as a user would: the chart, an issuer, a token, a pod.
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/localdemo/tokenline"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"
)

const (
	release    = "mlflow-token-operator"
	chartName  = "mlflow-token-operator" // the operator pods' app.kubernetes.io/name
	operatorNS = "mlflow-token-operator-system"
	chartDir   = "charts/mlflow-token-operator"
	demoNS     = "team-a"
	issuerName = "local-keycloak"
	tokenName  = "training-token"
	secretName = "mlflow-token"
	readerPod  = "token-reader"
	tokenDir   = "/var/run/secrets/mlflow"
)

// helm runs bin/tools/helm against the node, with its own cache and config under bin/local, and
// its output in the run's log directory.
func (d *demo) helm(ctx context.Context, args ...string) error {
	args = append(args, "--kubeconfig", d.n.Kubeconfig())
	cmd := exec.CommandContext(ctx, filepath.Join("bin", "tools", "helm"), args...)
	home, _ := filepath.Abs(filepath.Join(localDir, "helm"))
	// None of the caller's Helm settings (HELM_KUBECONTEXT, HELM_NAMESPACE, ...): this node only.
	env := slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "HELM_") })
	cmd.Env = append(env, "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group: a terminal's Ctrl-C reaches this program, which decides (through ctx)
	// whether helm is cut short.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err := cmd.Run()
	_ = os.WriteFile(filepath.Join(d.logDir, "helm-"+args[0]+".log"), out.Bytes(), 0o644)
	if err != nil {
		return fmt.Errorf("helm %s: %v\n%s", args[0], err, strings.TrimSpace(out.String()))
	}
	return nil
}

func (d *demo) installOperator(ctx context.Context) error {
	t := time.Now()
	// The chart as it is: its default image is the one imported into the node (pull policy
	// IfNotPresent: nothing is pulled).
	// Both namespaces enforce Pod Security "restricted", as a production cluster's would.
	if err := d.n.EnsureNamespace(ctx, operatorNS, restricted); err != nil {
		return err
	}
	say("helm install %s %s --namespace %s --wait", release, chartDir, operatorNS)
	if err := d.helm(ctx, "install", release, chartDir, "--namespace", operatorNS, "--wait", "--timeout", "5m"); err != nil {
		return err
	}
	d.helmUp = true
	var pods corev1.PodList
	if err := d.c.List(ctx, &pods, client.InNamespace(operatorNS), client.MatchingLabels{"app.kubernetes.io/instance": release}); err != nil {
		return err
	}
	for _, p := range pods.Items {
		if !node.PodReady(&p) || p.Labels["app.kubernetes.io/name"] != chartName {
			continue
		}
		say("Operator pod %s/%s Ready %s after helm install began (image %s)", p.Namespace, p.Name, since(t), p.Spec.Containers[0].Image)
		go copyLog(d.bg, d.n.Client(), p.Namespace, p.Name, filepath.Join(d.logDir, "operator.log"))
		return nil
	}
	return fmt.Errorf("helm install succeeded, yet no Ready operator pod in %s", operatorNS)
}

func (d *demo) uninstallOperator(ctx context.Context) error {
	t := time.Now()
	say("helm uninstall %s --namespace %s --wait (its pre-delete hook finds no token left to revoke)", release, operatorNS)
	if err := d.helm(ctx, "uninstall", release, "--namespace", operatorNS, "--wait", "--timeout", "3m"); err != nil {
		return err
	}
	say("Helm release uninstalled in %s", since(t))
	return nil
}

var restricted = map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}

// prepareNamespaces: the team's namespace, and the client secret, which a ClusterKeycloakIssuer
// reads from the operator's namespace: the team never sees it.
func (d *demo) prepareNamespaces(ctx context.Context) error {
	if err := d.n.EnsureNamespace(ctx, demoNS, restricted); err != nil {
		return err
	}
	return d.c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: clientID + "-client", Namespace: operatorNS},
		StringData: map[string]string{"client-secret": clientSecret},
	})
}

func (d *demo) createIssuerAndToken(ctx context.Context) error {
	// Keycloak serves plain HTTP here: the platform's issuer allows it explicitly (the operator
	// itself runs with the chart's defaults, which refuse http:// everywhere else).
	issuer := &authv1alpha1.ClusterKeycloakIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: issuerName},
		Spec: authv1alpha1.ClusterKeycloakIssuerSpec{
			KeycloakIssuerSpec: authv1alpha1.KeycloakIssuerSpec{URL: d.kcURL, Realm: realm, ClientAuth: authv1alpha1.IssuerClientAuth{
				ClientID: clientID, ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: clientID + "-client", Key: "client-secret"},
			}},
			AllowInsecureHTTP: true,
		},
	}
	if err := d.c.Create(ctx, issuer); err != nil {
		return err
	}
	t := time.Now()
	if err := waitFor(ctx, time.Minute, func() (bool, string) {
		if err := d.c.Get(ctx, client.ObjectKeyFromObject(issuer), issuer); err != nil {
			return false, err.Error()
		}
		return conditionTrue(issuer.Status.Conditions, authv1alpha1.ConditionReady)
	}); err != nil {
		return fmt.Errorf("ClusterKeycloakIssuer %s: %w", issuerName, err)
	}
	say("ClusterKeycloakIssuer %s Ready in %s: %s realm %s, client %s, allowInsecureHTTP: true (plain HTTP, only because Keycloak runs on this machine)",
		issuerName, since(t), d.kcURL, realm, clientID)

	tok := &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Name: tokenName, Namespace: demoNS},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			IssuerRef:  &authv1alpha1.IssuerRef{Kind: authv1alpha1.KindClusterKeycloakIssuer, Name: issuerName},
			Grant:      authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
			SecretName: secretName,
		},
	}
	if err := d.c.Create(ctx, tok); err != nil {
		return err
	}
	d.tokenSet = true
	t = time.Now()
	if err := waitFor(ctx, time.Minute, func() (bool, string) {
		if err := d.c.Get(ctx, client.ObjectKeyFromObject(tok), tok); err != nil {
			return false, err.Error()
		}
		if token, _ := d.secrets.latest(); token == nil {
			return false, "no token in Secret " + secretName + " yet"
		}
		return conditionTrue(tok.Status.Conditions, authv1alpha1.ConditionReady)
	}); err != nil {
		return fmt.Errorf("MLflowAccessToken %s/%s: %w", demoNS, tokenName, err)
	}
	token, exp := d.secrets.latest()
	say("MLflowAccessToken %s/%s Ready in %s: token %s in Secret %s, expires %s, renewal due %s",
		demoNS, tokenName, since(t), tokenline.Fingerprint(token), secretName, exp.Local().Format("15:04:05"), tok.Status.RenewalTime.Local().Format("15:04:05"))
	return nil
}

// startReader runs the pod that reads the token, as a training job would: the Secret mounted as
// a directory, and the consumer label, so that the operator nudges it after each rotation.
func (d *demo) startReader(ctx context.Context) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: readerPod, Namespace: demoNS, Labels: map[string]string{authv1alpha1.LabelConsumer: "true"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: "reader", Image: d.image("tokenwatch").Ref, ImagePullPolicy: corev1.PullIfNotPresent,
				Args:         []string{tokenDir + "/token"},
				VolumeMounts: []corev1.VolumeMount{{Name: "mlflow-token", MountPath: tokenDir, ReadOnly: true}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("8Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
				},
			}},
			Volumes: []corev1.Volume{{Name: "mlflow-token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secretName}}}},
		},
	}
	if err := d.c.Create(ctx, pod); err != nil {
		return err
	}
	t := time.Now()
	if err := waitFor(ctx, 2*time.Minute, func() (bool, string) {
		if err := d.c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err.Error()
		}
		return pod.Status.Phase == corev1.PodRunning, "phase " + string(pod.Status.Phase)
	}); err != nil {
		return fmt.Errorf("pod %s/%s: %w", demoNS, readerPod, err)
	}
	say("Pod %s/%s running in %s: Secret %s mounted at %s, label %s=true (the operator nudges it after each rotation)",
		demoNS, readerPod, since(t), secretName, tokenDir, authv1alpha1.LabelConsumer)
	return nil
}

// deleteToken deletes the MLflowAccessToken as a user would, and checks with Keycloak that the
// operator revoked the last token it wrote.
func (d *demo) deleteToken(ctx context.Context) error {
	say("Deleting MLflowAccessToken %s/%s: the operator revokes its token, then deletes the Secret", demoNS, tokenName)
	t := time.Now()
	tok := &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Name: tokenName, Namespace: demoNS}}
	if err := d.c.Delete(ctx, tok); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := waitFor(ctx, time.Minute, func() (bool, string) {
		err := d.c.Get(ctx, client.ObjectKeyFromObject(tok), tok)
		return apierrors.IsNotFound(err), fmt.Sprintf("still there (finalizers %v)", tok.Finalizers)
	}); err != nil {
		return fmt.Errorf("deleting MLflowAccessToken %s/%s: %w", demoNS, tokenName, err)
	}
	say("MLflowAccessToken deleted in %s", since(t))
	printEvents(d.c, demoNS, tokenName)
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: demoNS, Name: secretName}, &corev1.Secret{}); apierrors.IsNotFound(err) {
		say("Secret %s/%s deleted", demoNS, secretName)
	}
	// The watch saw every write in order: its latest token is the one the operator revoked.
	token, exp := d.secrets.latest()
	if left := time.Until(exp); left <= 0 {
		say("Token %s expired before it could be checked with Keycloak", tokenline.Fingerprint(token))
		return nil
	} else if active, err := keycloak.IntrospectContext(ctx, d.kcURL, realm, clientID, clientSecret, string(token), ""); err != nil {
		return fmt.Errorf("asking Keycloak whether token %s is revoked: %w", tokenline.Fingerprint(token), err)
	} else if active {
		return fmt.Errorf("token %s is still active at Keycloak after the MLflowAccessToken was deleted", tokenline.Fingerprint(token))
	} else {
		say("Token %s revoked: Keycloak's token introspection answers active=false, %.1f s before it would have expired", tokenline.Fingerprint(token), left.Seconds())
	}
	return nil
}

// conditionTrue: whether the condition is True, else how it reads.
func conditionTrue(conds []metav1.Condition, typ string) (bool, string) {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return false, typ + " not reported yet"
	}
	return c.Status == metav1.ConditionTrue, fmt.Sprintf("%s=%s %s: %s", typ, c.Status, c.Reason, c.Message)
}

// waitFor polls f until it says done, the timeout passes (the error quotes f's last word) or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, f func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		done, why := f()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), why)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
