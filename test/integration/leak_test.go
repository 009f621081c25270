package integration

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// TestSecretsNeverLeak runs a full lifecycle with a failure in it (a wrong client secret, then the
// right one, rotations, deletion) and keeps its status snapshots; scanForLeaks, which TestMain
// runs after every test has finished, then checks that no token or client secret any test saw
// appears in the operator's logs (every verbosity), in events or in status.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	const wrong = "wrong-secret-8c1f5d"
	seenTokens.add(wrong)
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", wrong)
	create(t, newToken(ns, "leak"))
	leakStatuses.add(waitReason(t, ns, "leak", authv1alpha1.ConditionReady, "False", authv1alpha1.ReasonInvalidClientCredentials, 30*time.Second).Status)
	s := getSecret(t, ns, "kc-client")
	s.Data["client-secret"] = []byte(clientSecret)
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	leakStatuses.add(waitReady(t, ns, "leak", 30*time.Second).Status)
	testenv.Eventually(t, waitForRotation, "a rotation", func() (bool, string) {
		return get(t, ns, "leak").Status.Rotations >= 2, "waiting"
	})
	seenTokens.add(secretToken(getSecret(t, ns, "leak")))
	leakStatuses.add(get(t, ns, "leak").Status)
	deleteAndWait(t, get(t, ns, "leak"), 30*time.Second)
}

// leakStatuses holds TestSecretsNeverLeak's status snapshots (status objects that were later
// overwritten are scanned too).
var leakStatuses = &statusLog{}

type statusLog struct {
	mu sync.Mutex
	l  []authv1alpha1.MLflowAccessTokenStatus
}

func (s *statusLog) add(st authv1alpha1.MLflowAccessTokenStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.l = append(s.l, st)
}

// scanForLeaks checks every secret value the tests saw (tokens, refresh tokens, client secrets)
// against the operator's logs, all events and all status, once every test has finished.
func scanForLeaks() error {
	ctx := context.Background()
	secrets := append(seenTokens.list(), clientSecret)
	// The whole suite collects dozens; a run narrowed with -run may collect a few.
	if !narrowed() && len(secrets) < 4 {
		return fmt.Errorf("only %d secret values collected; the check would prove little", len(secrets))
	}
	var evs eventsv1.EventList
	var coreEvs corev1.EventList
	var objs authv1alpha1.MLflowAccessTokenList
	for _, l := range []client.ObjectList{&evs, &coreEvs, &objs} {
		if err := k8s.List(ctx, l); err != nil {
			return err
		}
	}
	leakStatuses.mu.Lock()
	statuses := leakStatuses.l
	leakStatuses.mu.Unlock()
	evJSON, _ := json.Marshal(evs)
	coreJSON, _ := json.Marshal(coreEvs)
	statusJSON, _ := json.Marshal([]any{objs, statuses})
	logText := logs.String()
	if len(evs.Items) == 0 || len(logText) == 0 {
		if narrowed() {
			fmt.Println("leak scan: nothing to scan in this narrowed run (-run); the whole suite always scans")
			return nil
		}
		return fmt.Errorf("nothing collected: %d events, %d bytes of logs", len(evs.Items), len(logText))
	}
	var errs []error
	for where, text := range map[string]string{"logs": logText, "events": string(evJSON) + string(coreJSON), "status": string(statusJSON)} {
		for _, sec := range secrets {
			if strings.Contains(text, sec) {
				errs = append(errs, fmt.Errorf("a secret value (%d chars, starting %q) appears in %s", len(sec), sec[:min(6, len(sec))], where))
			}
			// A token's signature alone is as good as a leak of its tail.
			if parts := strings.Split(sec, "."); len(parts) == 3 && strings.Contains(text, parts[2]) {
				errs = append(errs, fmt.Errorf("a token signature appears in %s", where))
			}
		}
	}
	fmt.Printf("leak scan: checked %d secret values against %d bytes of logs, %d events and %d status snapshots\n", len(secrets), len(logText), len(evs.Items)+len(coreEvs.Items), len(objs.Items)+len(statuses))
	return errors.Join(errs...)
}

// narrowed says whether the run was narrowed with -run (a developer's subset, never CI's run).
func narrowed() bool {
	f := flag.Lookup("test.run")
	return f != nil && f.Value.String() != ""
}
