package csi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const experiment = "csi-training"

// testTrainingJob: the training image (MLflow's client and the token-file plugin, reading the
// mounted file unchanged) in a Job with the CSI volume, for more than three token lifetimes; the
// node plugin is killed (SIGKILL) while it runs. Every call must succeed.
func testTrainingJob(t *testing.T) {
	ctx := context.Background()
	// MLflow's side: the admin creates the experiment; the client's first bearer request
	// provisions its MLflow user, which is granted EDIT.
	admin, err := adminToken()
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		ExperimentID string `json:"experiment_id"`
	}
	if err := json.Unmarshal(mlflow.MustCall(t, "POST", "/api/2.0/mlflow/experiments/create", admin, map[string]string{"name": experiment}), &created); err != nil {
		t.Fatal(err)
	}
	own, err := grant(ctx, trainer)
	if err != nil {
		t.Fatalf("the trainer's client cannot get a token with its ServiceAccount (federated client authentication): %v", err)
	}
	getPath := "/api/2.0/mlflow/experiments/get?experiment_id=" + url.QueryEscape(created.ExperimentID)
	mlflow.Call(t, "GET", getPath, own, nil)
	mlflow.MustCall(t, "POST", "/api/2.0/mlflow/permissions/users/"+url.PathEscape("service-account-"+trainer.ClientID)+"/experiments/"+url.PathEscape(created.ExperimentID),
		admin, map[string]string{"permission": "EDIT"})
	eventually(t, 30*time.Second, 500*time.Millisecond, "the grant to take effect", func() (bool, string) {
		status, b := mlflow.Call(t, "GET", getPath, own, nil)
		return status == http.StatusOK, fmt.Sprintf("HTTP %d: %s", status, b)
	})

	duration := 3*trainer.Lifespan + 15*time.Second
	start := time.Now()
	job := trainingJob(duration)
	if _, err := cs.BatchV1().Jobs(trainer.Namespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := createPod(t, watcher(trainer, "trainer-watch"))
	waitRunning(t, w.Namespace, w.Name, 2*time.Minute)

	// A crash of the node plugin in the middle of the job.
	time.Sleep(trainer.Lifespan + 5*time.Second)
	plugin := pluginPod(t)
	killedAt := time.Now()
	if err := theNode.KillContainer(ctx, plugin.Status.ContainerStatuses[0].ContainerID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, 200*time.Millisecond, "the node plugin restarted", func() (bool, string) {
		p := pluginPod(t)
		return p.Status.ContainerStatuses[0].RestartCount > plugin.Status.ContainerStatuses[0].RestartCount, "not yet"
	})
	figures.Figure("node plugin back (Ready) %.1fs after its SIGKILL", time.Since(killedAt).Seconds())

	res, pod := waitJob(t, job.Name, duration+5*time.Minute)
	for _, c := range res.Calls {
		if !c.OK {
			t.Errorf("training job: call %q failed at t=%.1fs: HTTP %v: %s", c.What, c.T, c.Status, c.Error)
		}
	}
	if res.Elapsed < (3 * trainer.Lifespan).Seconds() {
		t.Errorf("the job ran %.0fs, want more than three token lifetimes (%s)", res.Elapsed, 3*trainer.Lifespan)
	}
	if len(res.Tokens) < 4 {
		t.Errorf("the job sent %d distinct tokens in %.0fs, want at least 4", len(res.Tokens), res.Elapsed)
	}
	if res.Steps == 0 || res.MetricPoints != res.Steps || res.ArtifactsLogged == 0 || res.ArtifactsListed != res.ArtifactsLogged {
		t.Errorf("the job logged %d steps (%d metric points on the server) and %d artifacts (%d listed)", res.Steps, res.MetricPoints, res.ArtifactsLogged, res.ArtifactsListed)
	}
	if !strings.HasPrefix(res.TrackingURI, mlflow.URL) {
		t.Errorf("the job's tracking URI %q is not the issuer's %s (the volume's MLFLOW_TRACKING_URI file)", res.TrackingURI, mlflow.URL)
	}
	figures.Figure("training job (CSI volume, %s tokens, plugin SIGKILLed at %.0fs): %d calls, all OK: %v; %d steps, %d artifacts; %d distinct tokens in %.0fs",
		trainer.Lifespan, killedAt.Sub(start).Seconds(), len(res.Calls), !t.Failed(), res.Steps, res.ArtifactsListed, len(res.Tokens), res.Elapsed)

	// Whose identity: Keycloak's events name the service-account token's subject that
	// authenticated each grant of the trainer's client.
	evs, err := kcEvents(ctx, start.Add(-time.Second))
	if err != nil {
		t.Fatal(err)
	}
	logins := 0
	for _, e := range evs {
		if e.ClientID != trainer.ClientID {
			continue
		}
		if e.Type != "CLIENT_LOGIN" {
			t.Errorf("Keycloak event %s for %s: %s", e.Type, trainer.ClientID, e.Error)
			continue
		}
		logins++
		if sub := e.Details["client_assertion_sub"]; sub != trainer.subject() {
			t.Errorf("a grant of %s was authenticated as %q, not the Job's ServiceAccount %s", trainer.ClientID, sub, trainer.subject())
		}
	}
	if logins == 0 {
		t.Error("Keycloak recorded no grant of the trainer's client")
	}
	figures.Figure("training: %d grants of %s, every one authenticated as %s (Keycloak's events)", logins, trainer.ClientID, trainer.subject())

	// The watcher of the same ServiceAccount ran through the kill: no expired read, rotations on time.
	lines := watchLines(t, w.Namespace, w.Name)
	_ = deletePod(w.Namespace, w.Name)
	if n := expiredReads(lines, time.Now()); n > 0 {
		t.Errorf("the watcher read an expired token %d times across the plugin's restart", n)
	}
	for i := 1; i < len(lines); i++ {
		if lines[i].Seen.After(killedAt) {
			prev := lines[i-1]
			figures.Figure("first rotation after the SIGKILL: %.1fs after it, the token it replaced had %.1fs left (lifetime %s)",
				lines[i].Seen.Sub(killedAt).Seconds(), prev.Expires.Sub(lines[i].Seen).Seconds(), trainer.Lifespan)
			break
		}
	}
	_ = pod
}

func trainingJob(duration time.Duration) *batchv1.Job {
	podSec, sec := restrictedSecurity()
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "train", Namespace: trainer.Namespace},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				ServiceAccountName: trainer.ServiceAccount, AutomountServiceAccountToken: ptr.To(false),
				RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: ptr.To[int64](5), SecurityContext: podSec,
				Containers: []corev1.Container{{
					Name: "train", Image: trainingImage, ImagePullPolicy: corev1.PullIfNotPresent, SecurityContext: sec,
					Args: []string{"--mode", "plugin", "--experiment", experiment, "--duration", fmt.Sprint(duration.Seconds()),
						"--interval", "2", "--out", "-", "--artifact-every", "5"},
					// The plugin reads /var/run/secrets/mlflow/token and MLFLOW_TRACKING_URI beside it.
					Env: []corev1.EnvVar{{Name: "MLFLOW_TRACKING_AUTH", Value: "token-file"},
						{Name: "MLFLOW_HTTP_REQUEST_TIMEOUT", Value: "20"}, {Name: "MLFLOW_HTTP_REQUEST_MAX_RETRIES", Value: "2"}},
					VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}, {Name: "mlflow", MountPath: "/var/run/secrets/mlflow", ReadOnly: true}},
				}},
				Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}, csiVolume("mlflow", trainer.ClientID)},
			}},
		},
	}
}

// jobResult is the RESULT line of test/e2e/training_job.py.
type jobResult struct {
	Calls []struct {
		T      float64 `json:"t"`
		What   string  `json:"what"`
		OK     bool    `json:"ok"`
		Status *int    `json:"status"`
		Error  string  `json:"error"`
	} `json:"calls"`
	Tokens          []string `json:"tokens"`
	Elapsed         float64  `json:"elapsed"`
	Steps           int      `json:"steps"`
	MetricPoints    int      `json:"metric_points"`
	ArtifactsLogged int      `json:"artifacts_logged"`
	ArtifactsListed int      `json:"artifacts_listed"`
	TrackingURI     string   `json:"tracking_uri"`
}

func waitJob(t *testing.T, name string, timeout time.Duration) (jobResult, corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	var pod corev1.Pod
	eventually(t, timeout, time.Second, "Job "+name+" to finish", func() (bool, string) {
		list, err := cs.CoreV1().Pods(trainer.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + name})
		if err != nil || len(list.Items) == 0 {
			return false, fmt.Sprintf("no pod yet (%v)", err)
		}
		pod = list.Items[0]
		return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed, string(pod.Status.Phase) + " " + podEvents(pod.Namespace, pod.Name)
	})
	out := podLog(t, pod.Namespace, pod.Name)
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "RESULT "); ok {
			var r jobResult
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				t.Fatalf("Job %s: its RESULT line does not parse: %v", name, err)
			}
			if pod.Status.Phase != corev1.PodSucceeded {
				t.Errorf("Job %s failed", name)
			}
			return r, pod
		}
	}
	t.Fatalf("Job %s printed no RESULT line; its log:\n%s", name, out)
	return jobResult{}, pod
}
