package csi

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// seenTokens are tokens the suite read from the node's disk: the API server must hold none.
var seenTokens []string

// testRevocation: a pod's token is revoked when the pod ends, and when the pod ended while the
// node plugin was down, once it is back.
func testRevocation(t *testing.T) {
	ctx := context.Background()
	// Deleted pod -> its token inactive at introspection.
	p := createPod(t, watcher(reaper, "reap-1"))
	p = waitRunning(t, p.Namespace, p.Name, 2*time.Minute)
	tok, err := hostToken(p, "mlflow")
	if err != nil || tok == "" {
		t.Fatalf("the pod's token file on the node: %v", err)
	}
	seenTokens = append(seenTokens, tok)
	if ok, err := active(ctx, reaper, tok); err != nil || !ok {
		t.Fatalf("the running pod's token is not active: %v %v", ok, err)
	}
	deleted := time.Now()
	if err := deletePod(p.Namespace, p.Name); err != nil {
		t.Fatal(err)
	}
	revokedIn := waitInactive(t, tok, deleted, 30*time.Second)
	figures.Figure("pod deleted -> its token inactive at introspection after %s (aim: 2s; token lifetime %s)", revokedIn.Round(10*time.Millisecond), reaper.Lifespan)
	if revokedIn > 10*time.Second {
		t.Errorf("the token became inactive %s after the pod's deletion", revokedIn)
	}
	waitGone(t, p.Namespace, p.Name, time.Minute)

	// A pod deleted while the plugin is down: its token is revoked once the plugin is back.
	p = createPod(t, watcher(reaper, "reap-2"))
	p = waitRunning(t, p.Namespace, p.Name, 2*time.Minute)
	tok, err = hostToken(p, "mlflow")
	if err != nil || tok == "" {
		t.Fatalf("the pod's token file on the node: %v", err)
	}
	seenTokens = append(seenTokens, tok)
	setPluginNodeSelector(t, `{"csi-test.mlflow-token-operator.io/nowhere":"true"}`)
	eventually(t, time.Minute, 250*time.Millisecond, "the node plugin gone", func() (bool, string) {
		list, err := cs.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=csi-node"})
		return err == nil && len(list.Items) == 0, "still there"
	})
	if err := deletePod(p.Namespace, p.Name); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	if ok, err := active(ctx, reaper, tok); err != nil || !ok {
		t.Fatalf("with the plugin down, the token of the deleted pod should still be active (nothing could revoke it): %v %v", ok, err)
	}
	back := time.Now()
	setPluginNodeSelector(t, `null`)
	pluginPod(t)
	revokedIn = waitInactive(t, tok, back, 3*time.Minute)
	figures.Figure("pod deleted while the plugin was down -> its token inactive %s after the plugin was started again", revokedIn.Round(100*time.Millisecond))
	waitGone(t, p.Namespace, p.Name, 2*time.Minute)
}

func waitInactive(t *testing.T, tok string, since time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	eventually(t, timeout, 50*time.Millisecond, "the token inactive at introspection", func() (bool, string) {
		ok, err := active(context.Background(), reaper, tok)
		took = time.Since(since)
		return err == nil && !ok, "still active"
	})
	return took
}

// setPluginNodeSelector patches the plugin DaemonSet's node selector (null removes it): a node
// selector no node has takes the plugin off the node, as an upgrade or an outage would.
func setPluginNodeSelector(t *testing.T, sel string) {
	t.Helper()
	list, err := cs.AppsV1().DaemonSets(releaseNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=csi-node"})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("the plugin's DaemonSet: %v", err)
	}
	patch := `{"spec":{"template":{"spec":{"nodeSelector":` + sel + `}}}}`
	if _, err := cs.AppsV1().DaemonSets(releaseNS).Patch(context.Background(), list.Items[0].Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	_ = appsv1.DaemonSet{}
}
