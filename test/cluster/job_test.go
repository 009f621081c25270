package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// jobTokens are the lifetime of the training realm's tokens and how the jobs' pods get fresh ones.
//
// The kubelet runs with its defaults (syncFrequency 1m): on its own it writes a rotated Secret
// into a running pod only at the pod's next periodic sync, up to ~90 s later (measured 57-69 s,
// see test/node). The plugin job's pod is labelled as a consumer, so the operator nudges it after
// each rotation and its kubelet delivers the new token within a second or so. The tokens live
// 60 s and are renewed 40 s before they expire: without the nudge the pod would hold an expired
// token for part of every rotation; with it, every call must succeed. The 40 s also outlast a
// crash failover (the lease duration plus retries, ~15-19 s measured), which runs at the same
// time (TestChart/workloads).
var jobTokens = struct {
	Lifespan    time.Duration
	RenewBefore time.Duration     // 0: the operator's default (two thirds of the lifetime)
	PodLabels   map[string]string // labels of the plugin job's pod
}{
	Lifespan:    60 * time.Second,
	RenewBefore: 40 * time.Second,
	PodLabels:   map[string]string{authv1alpha1.LabelConsumer: "true"},
}

const (
	experiment  = "node-training"
	jobInterval = 3 * time.Second
	// The plugin job uploads an artifact every this many steps (through the artifact proxy).
	artifactEvery = 5
)

// testTrainingJobs runs the training job image (Python, the MLflow client, the token-file
// plugin) as Jobs on the node, against MLflow + mlflow-oidc-auth on HostIP:
//
//   - plugin: the operator's Secret mounted as a volume, MLFLOW_TRACKING_AUTH=token-file; it
//     logs params, metrics and artifacts for more than three token lifetimes, and every call
//     must succeed;
//   - stock: the same Secret as environment variables (envFrom), as MLflow documents it; its
//     token is fixed when the container starts, so it fails with 401 once that token expires.
func testTrainingJobs(t *testing.T) {
	ctx := context.Background()
	if err := theNode.EnsureNamespace(ctx, trainingNS, restricted); err != nil {
		t.Fatal(err)
	}
	createSecret(t, trainingNS, "keycloak-client", map[string]string{"client-secret": ccClientSecret})
	spec := authv1alpha1.MLflowAccessTokenSpec{
		Keycloak: keycloakSpec(realmMLflow, ccClientID, "keycloak-client"),
		Grant:    authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		MLflow:   &authv1alpha1.MLflowSpec{TrackingURI: mlflow.URL},
		// Each rotated-away token is revoked once the nudged pod has read the new one: the
		// plugin job must not notice (MLflow validates tokens locally anyway; introspection
		// shows the revocation).
		Revocation: &authv1alpha1.RevocationSpec{RevokeSuperseded: true, SupersededGracePeriod: &metav1.Duration{Duration: supersededGrace}},
	}
	if jobTokens.RenewBefore > 0 {
		spec.RenewBefore = &metav1.Duration{Duration: jobTokens.RenewBefore}
	}
	obj := createToken(t, trainingNS, "mlflow", spec)
	obj = waitTokenReady(t, trainingNS, obj.Name, 2*time.Minute)
	tok := tokenOf(t, obj)
	claims := jwtClaims(tok)
	if got := time.Duration(claims["exp"].(float64)-claims["iat"].(float64)) * time.Second; got != jobTokens.Lifespan {
		t.Fatalf("the token lives %s, want the realm's %s", got, jobTokens.Lifespan)
	}

	// MLflow's side: the admin creates the experiment; the service account's first bearer
	// request provisions its MLflow user (by its groups claim), which is then granted EDIT.
	admin, err := passwordGrant(realmMLflow, serverClientID, serverClientSecret, adminUser, adminPassword, "openid email profile")
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		ExperimentID string `json:"experiment_id"`
	}
	if err := json.Unmarshal(mlflow.MustCall(t, "POST", "/api/2.0/mlflow/experiments/create", admin.AccessToken, map[string]string{"name": experiment}), &created); err != nil || created.ExperimentID == "" {
		t.Fatalf("creating the experiment: %v %+v", err, created)
	}
	getPath := "/api/2.0/mlflow/experiments/get?experiment_id=" + url.QueryEscape(created.ExperimentID)
	if status, b := mlflow.Call(t, "GET", getPath, tok, nil); status != http.StatusForbidden {
		t.Fatalf("before the grant the service account should get 403, got HTTP %d: %s", status, b)
	}
	mlflow.MustCall(t, "POST", "/api/2.0/mlflow/permissions/users/"+url.PathEscape(saUsername)+"/experiments/"+url.PathEscape(created.ExperimentID),
		admin.AccessToken, map[string]string{"permission": "EDIT"})
	eventually(t, 30*time.Second, 500*time.Millisecond, "the grant to take effect", func() (bool, string) {
		status, b := mlflow.Call(t, "GET", getPath, tokenOf(t, obj), nil)
		return status == http.StatusOK, fmt.Sprintf("HTTP %d: %s", status, b)
	})

	pluginFor := 3*jobTokens.Lifespan + 10*time.Second
	stockFor := jobTokens.Lifespan + 60*time.Second // it stops at its first failure
	superseded := watchSuperseded(trainingNS, obj.SecretNameOrDefault())
	start := time.Now()
	jobs := []*batchv1.Job{
		trainingJob("plugin", obj.SecretNameOrDefault(), pluginFor, jobTokens.PodLabels),
		trainingJob("stock", obj.SecretNameOrDefault(), stockFor, nil),
	}
	for _, j := range jobs {
		if _, err := cs.BatchV1().Jobs(trainingNS).Create(ctx, j, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Halfway, what the operator says about delivering tokens to the consumers (for the record).
	time.Sleep(pluginFor / 2)
	delivery := "no DeliveryAtRisk condition"
	if cur, err := getToken(trainingNS, obj.Name); err == nil {
		if c := meta.FindStatusCondition(cur.Status.Conditions, authv1alpha1.ConditionDeliveryAtRisk); c != nil {
			delivery = fmt.Sprintf("DeliveryAtRisk=%s (%s: %s)", c.Status, c.Reason, c.Message)
		}
	}
	results := map[string]jobResult{}
	pods := map[string]corev1.Pod{}
	for _, j := range jobs {
		results[j.Name], pods[j.Name] = waitJob(t, j.Name, pluginFor+5*time.Minute)
	}
	times.Step("training jobs in pods (plugin: three token lifetimes)", time.Since(start))
	revoked, afterFailover, never := superseded.stop()
	for _, d := range revoked {
		if d > supersededGrace+2*time.Second {
			t.Errorf("a superseded token turned inactive %s after its rotation, later than the grace period (%s) + 2 s", d.Round(100*time.Millisecond), supersededGrace)
		}
	}
	if len(revoked) < 3 || never > 0 {
		t.Errorf("superseded tokens: %d revoked within the job, %d still active when they expired; want at least 3 revoked and none left", len(revoked), never)
	}
	times.Figure("revokeSuperseded (grace %s): superseded tokens inactive at introspection after their rotation: %s; across a leader change: %s; never: %d",
		supersededGrace, durations(revoked), durations(afterFailover), never)
	times.Figure("training token halfway through the jobs: %s", delivery)
	if len(jobTokens.PodLabels) > 0 {
		// The operator nudged the labelled pod after rotations: its annotation says when.
		p := pods["plugin"]
		if at := p.Annotations[authv1alpha1.AnnotationTokenRotatedAt]; at == "" {
			t.Errorf("the plugin job's pod (labelled %v) was never nudged: no %s annotation", jobTokens.PodLabels, authv1alpha1.AnnotationTokenRotatedAt)
		}
	}

	plugin, stock := results["plugin"], results["stock"]
	okCalls := 0
	for _, c := range plugin.Calls {
		if c.OK {
			okCalls++
		} else {
			t.Errorf("plugin job: call %q failed at t=%.1fs: HTTP %v: %s", c.What, c.T, deref(c.Status), c.Error)
		}
	}
	if plugin.Elapsed < (3 * jobTokens.Lifespan).Seconds() {
		t.Errorf("the plugin job ran %.0fs, want more than three token lifetimes (%s)", plugin.Elapsed, 3*jobTokens.Lifespan)
	}
	// Each token lives one lifetime, so a job that never failed for three lifetimes must have
	// read at least four from the mounted file.
	if len(plugin.Tokens) < 4 {
		t.Errorf("the plugin job sent %d distinct tokens in %.0fs, want at least 4", len(plugin.Tokens), plugin.Elapsed)
	}
	if plugin.Steps == 0 || plugin.MetricPoints != plugin.Steps {
		t.Errorf("the plugin job logged %d steps, the server has %d metric points", plugin.Steps, plugin.MetricPoints)
	}
	if plugin.ArtifactsLogged == 0 || plugin.ArtifactsListed != plugin.ArtifactsLogged {
		t.Errorf("the plugin job uploaded %d artifacts, the server lists %d", plugin.ArtifactsLogged, plugin.ArtifactsListed)
	}
	times.Figure("plugin job (Secret volume, kubelet default sync, pod labelled %v): %d calls, %d OK, over %.0fs; %d steps, %d metric points, %d artifacts uploaded and listed; %d distinct tokens sent",
		jobTokens.PodLabels, len(plugin.Calls), okCalls, plugin.Elapsed, plugin.Steps, plugin.MetricPoints, plugin.ArtifactsListed, len(plugin.Tokens))

	ff := stock.FirstFailure
	switch {
	case ff == nil:
		t.Errorf("the stock job never failed in %.0fs although its token lives %s", stock.Elapsed, jobTokens.Lifespan)
	case deref(ff.Status) != http.StatusUnauthorized:
		t.Errorf("the stock job's first failure is not a 401: %+v", *ff)
	default:
		okBefore := 0
		for _, c := range stock.Calls {
			if c.OK {
				okBefore++
			}
		}
		if okBefore == 0 {
			t.Errorf("the stock job failed at once: its token should have worked until it expired")
		}
		failedAfter := ff.Wall - stock.StartedWall
		if failedAfter > (jobTokens.Lifespan + 30*time.Second).Seconds() {
			t.Errorf("the stock job failed %.0fs after it started, later than its token's lifetime (%s) allows", failedAfter, jobTokens.Lifespan)
		}
		times.Figure("stock job (envFrom): %d calls OK, then HTTP %d at %q %.0fs after the container started (token lifetime %s)",
			okBefore, *ff.Status, ff.What, failedAfter, jobTokens.Lifespan)
	}
}

// trainingJob is a Job of the training image (test/e2e/training_job.py). mode plugin mounts the
// Secret at the plugin's default path; stock takes it as environment variables.
func trainingJob(mode, secret string, duration time.Duration, labels map[string]string) *batchv1.Job {
	podSec, sec := restrictedPodSecurity()
	c := corev1.Container{
		Name:            "train",
		Image:           trainingImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args: []string{"--mode", mode, "--experiment", experiment,
			"--duration", fmt.Sprint(duration.Seconds()), "--interval", fmt.Sprint(jobInterval.Seconds()), "--out", "-"},
		Env: []corev1.EnvVar{
			{Name: "MLFLOW_HTTP_REQUEST_TIMEOUT", Value: "20"},
			{Name: "MLFLOW_HTTP_REQUEST_MAX_RETRIES", Value: "2"},
		},
		SecurityContext: sec,
		// MLflow writes an artifact to a temporary file before it uploads it.
		VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
	}
	volumes := []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	switch mode {
	case "plugin":
		c.Args = append(c.Args, "--artifact-every", fmt.Sprint(artifactEvery))
		// The plugin reads /var/run/secrets/mlflow/token and, through configure(), the tracking
		// URI beside it: no other setting.
		c.Env = append(c.Env, corev1.EnvVar{Name: "MLFLOW_TRACKING_AUTH", Value: "token-file"})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "mlflow-token", MountPath: "/var/run/secrets/mlflow", ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "mlflow-token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}})
	case "stock":
		// MLFLOW_TRACKING_TOKEN and MLFLOW_TRACKING_URI, fixed when the container starts.
		c.EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: secret}}}}
	}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: mode, Namespace: trainingNS},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                 corev1.RestartPolicyNever,
					AutomountServiceAccountToken:  ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					SecurityContext:               podSec,
					Containers:                    []corev1.Container{c},
					Volumes:                       volumes,
				},
			},
		},
	}
}

// jobResult is what training_job.py prints as its RESULT line.
type jobResult struct {
	Calls           []jobCall `json:"calls"`
	Tokens          []string  `json:"tokens"`
	FirstFailure    *jobCall  `json:"first_failure"`
	Elapsed         float64   `json:"elapsed"`
	StartedWall     float64   `json:"started_wall"`
	Steps           int       `json:"steps"`
	MetricPoints    int       `json:"metric_points"`
	ArtifactsLogged int       `json:"artifacts_logged"`
	ArtifactsListed int       `json:"artifacts_listed"`
	TrackingURI     string    `json:"tracking_uri"`
}

type jobCall struct {
	T      float64 `json:"t"`
	Wall   float64 `json:"wall"`
	What   string  `json:"what"`
	OK     bool    `json:"ok"`
	Status *int    `json:"status"`
	Error  string  `json:"error"`
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// waitJob waits until the Job's pod has finished and returns its RESULT line and the pod.
func waitJob(t *testing.T, name string, timeout time.Duration) (jobResult, corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	var pod corev1.Pod
	eventually(t, timeout, time.Second, "Job "+name+" to finish", func() (bool, string) {
		list, err := cs.CoreV1().Pods(trainingNS).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + name})
		if err != nil || len(list.Items) == 0 {
			return false, fmt.Sprintf("no pod yet (%v)", err)
		}
		pod = list.Items[0]
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return true, ""
		}
		if st := pod.Status.ContainerStatuses; len(st) > 0 && st[0].State.Waiting != nil {
			switch st[0].State.Waiting.Reason {
			case "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError":
				t.Fatalf("Job %s cannot start: %s", name, podState(&pod))
			}
		}
		return false, podState(&pod)
	})
	data, err := cs.CoreV1().Pods(trainingNS).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var r jobResult
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "RESULT "); ok {
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				t.Fatalf("Job %s: its RESULT line does not parse: %v", name, err)
			}
			if pod.Status.Phase != corev1.PodSucceeded && name == "plugin" {
				t.Errorf("Job %s failed: %s", name, podState(&pod))
			}
			return r, pod
		}
	}
	t.Fatalf("Job %s (%s) printed no RESULT line; its log ends:\n%s", name, podState(&pod), lastLines(string(data), 30))
	return r, pod
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
