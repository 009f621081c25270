package integration

// This file sorts last so that its test runs after the others and sees all their logs.

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// No token or client secret appears in the operator's logs (every verbosity), in events or in
// status, over full lifecycles including failures.
func TestSecretsNeverLeak(t *testing.T) {
	const wrong = "wrong-secret-8c1f5d"
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", wrong)
	create(t, newToken(ns, "leak"))
	var statuses []authv1alpha1.MLflowAccessTokenStatus
	statuses = append(statuses, waitReason(t, ns, "leak", authv1alpha1.ConditionReady, "False", authv1alpha1.ReasonInvalidClientCredentials, 30*time.Second).Status)
	s := getSecret(t, ns, "kc-client")
	s.Data["client-secret"] = []byte(clientSecret)
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	statuses = append(statuses, waitReady(t, ns, "leak", 30*time.Second).Status)
	testenv.Eventually(t, waitForRotation, "a rotation", func() (bool, string) {
		return get(t, ns, "leak").Status.Rotations >= 2, "waiting"
	})
	seenTokens.add(secretToken(getSecret(t, ns, "leak")))
	statuses = append(statuses, get(t, ns, "leak").Status)
	deleteAndWait(t, get(t, ns, "leak"), 30*time.Second)

	secrets := append(seenTokens.list(), clientSecret, wrong)
	if len(secrets) < 4 {
		t.Fatalf("only %d secrets collected; the check would prove little", len(secrets))
	}

	var evs eventsv1.EventList
	if err := k8s.List(context.Background(), &evs); err != nil {
		t.Fatal(err)
	}
	var coreEvs corev1.EventList
	if err := k8s.List(context.Background(), &coreEvs); err != nil {
		t.Fatal(err)
	}
	var objs authv1alpha1.MLflowAccessTokenList
	if err := k8s.List(context.Background(), &objs); err != nil {
		t.Fatal(err)
	}
	evJSON, _ := json.Marshal(evs)
	coreJSON, _ := json.Marshal(coreEvs)
	statusJSON, _ := json.Marshal([]any{objs, statuses})
	logText := logs.String()
	if len(evs.Items) == 0 || len(logText) == 0 {
		t.Fatalf("nothing collected: %d events, %d bytes of logs", len(evs.Items), len(logText))
	}
	for where, text := range map[string]string{"logs": logText, "events": string(evJSON) + string(coreJSON), "status": string(statusJSON)} {
		for _, sec := range secrets {
			if strings.Contains(text, sec) {
				t.Errorf("a secret value (%d chars, starting %q) appears in %s", len(sec), sec[:6], where)
			}
			// A token's signature alone is as good as a leak of its tail.
			if parts := strings.Split(sec, "."); len(parts) == 3 && strings.Contains(text, parts[2]) {
				t.Errorf("a token signature appears in %s", where)
			}
		}
	}
	t.Logf("checked %d secret values against %d bytes of logs, %d events and %d status snapshots", len(secrets), len(logText), len(evs.Items), len(statuses))
}
