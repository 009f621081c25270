package integration

// `kubectl mlflow-token inspect` (alias `status`) as one view of a token: its issuer and the
// issuer's readiness, every condition, the Secret's keys, the pods of the namespace that read the
// Secret (and which of them the operator nudges), and its events with folded series; with and
// without the rights to read each part. Pods are API objects here (envtest runs no kubelet):
// what the plugin says about them is decided from their spec, as the operator decides.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// plainEnvValue is a literal env value of a pod: the plugin shows env var names, never values.
const plainEnvValue = "plain-env-value-must-not-show-5e1d"

// consumerPod is a pod of one container "train" reading the Secret as spec says.
func consumerPod(ns, name string, labelled bool, spec func(*corev1.PodSpec, *corev1.Container)) *corev1.Pod {
	c := corev1.Container{Name: "train", Image: "registry.example.com/train:1",
		Env: []corev1.EnvVar{{Name: "EPOCHS", Value: plainEnvValue}}}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{AutomountServiceAccountToken: ptr.To(false)},
	}
	if labelled {
		p.Labels = map[string]string{authv1alpha1.LabelConsumer: "true"}
	}
	spec(&p.Spec, &c)
	p.Spec.Containers = append(p.Spec.Containers, c)
	return p
}

func secretVolume(name, secret string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}}
}

func secretEnv(name, secret string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "token"}}}
}

// statusReport is the part of inspect -o json this test reads.
type statusReport struct {
	Keycloak struct {
		Issuer      string `json:"issuer"`
		URL         string `json:"url"`
		IssuerReady *struct {
			Status string `json:"status"`
			Reason string `json:"reason"`
		} `json:"issuerReady"`
		IssuerError string `json:"issuerError"`
	} `json:"keycloak"`
	SecretKeys   []string `json:"secretKeys"`
	ConsumerPods []struct {
		Name     string `json:"name"`
		Labelled bool   `json:"consumerLabel"`
		Nudged   bool   `json:"nudged"`
		Reads    []struct {
			Container, How, Where string
			Init                  bool
		} `json:"reads"`
		Delivery string `json:"delivery"`
	} `json:"consumerPods"`
	Events []struct {
		Type, Reason, Note string
		Count              int32     `json:"count"`
		Last               time.Time `json:"lastTime"`
	} `json:"events"`
	EventsError string `json:"eventsError"`
	PodsError   string `json:"podsError"`
}

func inspectJSON(t *testing.T, args ...string) (statusReport, string) {
	t.Helper()
	raw := mustPlugin(t, append([]string{"inspect", "-o", "json"}, args...)...).stdout
	var r statusReport
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatalf("inspect -o json: %v\n%s", err, raw)
	}
	return r, raw
}

func TestPluginStatus(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "platform-client", clientSecret)
	create(t, &authv1alpha1.KeycloakIssuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "team"},
		Spec: authv1alpha1.KeycloakIssuerSpec{URL: kcServer.URL(), Realm: realm,
			ClientAuth: authv1alpha1.IssuerClientAuth{ClientID: clientID, ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "platform-client", Key: "client-secret"}}},
	})
	create(t, newToken(ns, "train", func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Keycloak = nil
		o.Spec.IssuerRef = &authv1alpha1.IssuerRef{Name: "team"}
	}))
	for _, p := range []*corev1.Pod{
		consumerPod(ns, "nudged", true, func(s *corev1.PodSpec, c *corev1.Container) {
			s.Volumes = []corev1.Volume{secretVolume("tok", "train")}
			c.VolumeMounts = []corev1.VolumeMount{{Name: "tok", MountPath: "/var/run/secrets/mlflow"}}
		}),
		consumerPod(ns, "unlabelled", false, func(s *corev1.PodSpec, c *corev1.Container) {
			s.Volumes = []corev1.Volume{{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "train"}}}}}}}}
			c.VolumeMounts = []corev1.VolumeMount{{Name: "all", MountPath: "/etc/creds"}}
		}),
		consumerPod(ns, "env-labelled", true, func(s *corev1.PodSpec, c *corev1.Container) {
			c.Env = append(c.Env, secretEnv("MLFLOW_TRACKING_TOKEN", "train"))
		}),
		consumerPod(ns, "envfrom", false, func(s *corev1.PodSpec, c *corev1.Container) {
			c.EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "train"}}}}
		}),
		consumerPod(ns, "subpath", true, func(s *corev1.PodSpec, c *corev1.Container) {
			s.Volumes = []corev1.Volume{secretVolume("tok", "train")}
			c.VolumeMounts = []corev1.VolumeMount{{Name: "tok", MountPath: "/token", SubPath: "token"}}
		}),
		consumerPod(ns, "other-secret", true, func(s *corev1.PodSpec, c *corev1.Container) {
			s.Volumes = []corev1.Volume{secretVolume("tok", "platform-client")}
			c.VolumeMounts = []corev1.VolumeMount{{Name: "tok", MountPath: "/x"}}
		}),
	} {
		create(t, p)
	}
	waitReady(t, ns, "train", 30*time.Second)

	// Text: issuer and its readiness, conditions, the Secret's keys, claims, pods, events.
	out := mustPlugin(t, "inspect", "train", "-n", ns)
	text := out.stdout
	for _, want := range []string{
		`(?m)^Issuer:\s+KeycloakIssuer/team client ` + clientID + `, grant ClientCredentials$`,
		`(?m)^Keycloak:\s+` + regexp.QuoteMeta(kcServer.URL()) + ` realm ` + realm + `$`,
		`(?m)^Issuer Ready:\s+True \(` + authv1alpha1.ReasonIssuerReady + `\)`,
		`(?m)^Ready:\s+True \(TokenValid\)`,
		`(?m)^Secret:\s+train \(keys: MLFLOW_TRACKING_TOKEN, expiresAt, token\)$`,
		`(?m)^  preferred_username:\s+service-account-` + clientID + `$`,
		`(?m)^Consumer pods \(reading Secret train\):$`,
		`(?m)^  nudged\s+Pending\s+directory /var/run/secrets/mlflow \(train\)\s+nudged after each rotation`,
		`(?m)^  unlabelled\s+Pending\s+directory /etc/creds \(train\)\s+not nudged \(no label auth.mlflow-token-operator.io/consumer=true\)`,
		`(?m)^  env-labelled\s+Pending\s+env MLFLOW_TRACKING_TOKEN \(train\)\s+env or subPath only`,
		`(?m)^  envfrom\s+Pending\s+envFrom \(train\)\s+env or subPath only`,
		`(?m)^  subpath\s+Pending\s+subPath /token \(train\)\s+env or subPath only`,
		`(?m)^Events \(newest first\):$`,
		`(?m)^  LAST SEEN\s+TYPE\s+REASON\s+COUNT\s+FROM\s+MESSAGE$`,
	} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("inspect lacks %s:\n%s", want, text)
		}
	}
	if strings.Contains(text, "other-secret") {
		t.Errorf("a pod that reads another Secret is listed:\n%s", text)
	}

	// status is the same command.
	st := mustPlugin(t, "status", "train", "-n", ns)
	if !strings.Contains(st.stdout, "Consumer pods (reading Secret train):") || !strings.Contains(st.stdout, "Issuer Ready:") {
		t.Errorf("status:\n%s", st.stdout)
	}

	// JSON: the same, for scripts; the plugin's "nudged" is the operator's: the operator's own
	// count of labelled pods that mount the Secret matches.
	rep, raw := inspectJSON(t, "train", "-n", ns)
	var names, nudged []string
	for _, p := range rep.ConsumerPods {
		names = append(names, p.Name)
		if p.Nudged {
			nudged = append(nudged, p.Name)
		}
	}
	if !slices.Equal(names, []string{"env-labelled", "envfrom", "nudged", "subpath", "unlabelled"}) || !slices.Equal(nudged, []string{"nudged"}) ||
		rep.Keycloak.IssuerReady == nil || rep.Keycloak.IssuerReady.Status != "True" || rep.Keycloak.URL != kcServer.URL() ||
		!slices.Equal(rep.SecretKeys, []string{"MLFLOW_TRACKING_TOKEN", "expiresAt", "token"}) {
		t.Errorf("inspect -o json:\n%s", raw)
	}
	testenv.Eventually(t, 30*time.Second, "the operator's consumer count", func() (bool, string) {
		c := get(t, ns, "train").Status.Consumers
		return c != nil && c.Pods == int32(len(nudged)) && c.Nudged == c.Pods && c.NotUpdatable == 2, jsonString(c)
	})
	if del := mustPlugin(t, "inspect", "train", "-n", ns).stdout; !regexp.MustCompile(`(?m)^Delivery:\s+token of \S+: 1 labelled pod\(s\) mount the Secret, 1 nudged, 0 failed, 2 read it only through env or subPath`).MatchString(del) {
		t.Errorf("inspect lacks the operator's delivery figures:\n%s", del)
	}

	// A token that keeps failing: its repeated event is one line with a count, newest first.
	createClientSecret(t, ns, "kc-wrong", "wrong-secret-for-status-9d2c")
	create(t, newToken(ns, "broken", func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.ClientSecretRef.Name = "kc-wrong" }))
	var brokenRaw string
	testenv.Eventually(t, 40*time.Second, "a folded series of events", func() (bool, string) {
		var r statusReport
		r, brokenRaw = inspectJSON(t, "broken", "-n", ns)
		for _, e := range r.Events {
			if e.Count >= 2 {
				return true, ""
			}
		}
		return false, brokenRaw
	})
	var broken statusReport
	_ = json.Unmarshal([]byte(brokenRaw), &broken)
	if !slices.IsSortedFunc(broken.Events, func(a, b struct {
		Type, Reason, Note string
		Count              int32     `json:"count"`
		Last               time.Time `json:"lastTime"`
	}) int {
		return b.Last.Compare(a.Last)
	}) {
		t.Errorf("events are not newest first:\n%s", brokenRaw)
	}
	brokenText := expectExit(t, exitNotReady, "inspect", "broken", "-n", ns, "--require-ready").stdout
	if !regexp.MustCompile(`(?m)^  \S+ ago\s+Warning\s+\S+\s+([2-9]|\d\d+) since \S+ ago\s+`).MatchString(brokenText) ||
		!regexp.MustCompile(`(?m)^Ready:\s+False \(`+authv1alpha1.ReasonInvalidClientCredentials+`\)`).MatchString(brokenText) ||
		!strings.Contains(brokenText, "Consumer pods:         none in namespace "+ns+" reads Secret broken") {
		t.Errorf("inspect of a failing token:\n%s", brokenText)
	}

	// A missing cluster issuer: said, and the rest still shown.
	create(t, newToken(ns, "orphan", func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Keycloak = nil
		o.Spec.IssuerRef = &authv1alpha1.IssuerRef{Kind: authv1alpha1.KindClusterKeycloakIssuer, Name: "no-such-issuer"}
	}))
	orphan := mustPlugin(t, "inspect", "orphan", "-n", ns).stdout
	if !strings.Contains(orphan, "Issuer Ready:          unknown (ClusterKeycloakIssuer no-such-issuer does not exist)") ||
		!strings.Contains(orphan, "Issuer:                ClusterKeycloakIssuer/no-such-issuer") {
		t.Errorf("inspect with a missing cluster issuer:\n%s", orphan)
	}

	// Someone who may only read the resource: every other part says why it is missing.
	kc := restrictedKubeconfig(t, ns, "status-reader", []rbacv1.PolicyRule{
		{APIGroups: []string{authv1alpha1.GroupVersion.Group}, Resources: []string{"mlflowaccesstokens"}, Verbs: []string{"get"}},
	})
	limited := mustPlugin(t, "inspect", "train", "-n", ns, "--kubeconfig", kc).stdout
	for _, want := range []string{
		"Issuer Ready:          unknown (you may not read KeycloakIssuer team)",
		"Token claims:          (you may not read Secret train (needs get on secrets in namespace " + ns + "))",
		"Consumer pods:         (you may not list pods in namespace " + ns + ")",
		"Events:                (you may not list events in namespace " + ns + ")",
		"Ready:                 True (TokenValid)",
	} {
		if !strings.Contains(limited, want) {
			t.Errorf("inspect with get on the resource only lacks %q:\n%s", want, limited)
		}
	}

	secrets := []string{secretToken(getSecret(t, ns, "train")), secretToken(getSecret(t, ns, "broken")), clientSecret, "wrong-secret-for-status-9d2c", plainEnvValue}
	noSecretsIn(t, text+out.stderr+st.stdout+raw+brokenRaw+brokenText+orphan+limited, secrets...)
	for _, name := range []string{"train", "broken", "orphan"} {
		deleteAndWait(t, get(t, ns, name), 30*time.Second)
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// The binary itself, without any kubeconfig (HOME without ~/.kube/config, KUBECONFIG unset):
// where it looked and how to name one, not client-go's KUBERNETES_MASTER hint.
func TestPluginWithoutKubeconfig(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	cmd := exec.Command(pluginBinary(t), "list")
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KUBECONFIG=") && !strings.HasPrefix(e, "HOME=") && !strings.HasPrefix(e, "KUBERNETES_SERVICE_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+home)
	out, err := cmd.CombinedOutput()
	msg := string(out)
	if cmd.ProcessState.ExitCode() != exitError || err == nil ||
		!strings.Contains(msg, "error: no kubeconfig found: $KUBECONFIG is not set and ~/.kube/config ("+filepath.Join(home, ".kube", "config")+") does not exist") ||
		!strings.Contains(msg, "--kubeconfig FILE, or export KUBECONFIG=FILE") || strings.Contains(msg, "KUBERNETES_MASTER") {
		t.Errorf("exit %d:\n%s", cmd.ProcessState.ExitCode(), msg)
	}
}
