//go:build linux

// How the node mode sees a token travel: into the Secret (a watch through the API), then into the
// pod (the reader's log, through the API as `kubectl logs -f` reads it).
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/localdemo/tokenline"
)

type watchResult struct {
	rotations int
	delays    []time.Duration
}

// watch prints each token the reader pod reads, from its log, until ctx ends or duration has
// passed since the first one.
func (d *demo) watch(ctx context.Context, duration time.Duration, begin time.Time) (watchResult, error) {
	var res watchResult
	lines := make(chan string)
	go followLog(ctx, d.n.Client(), demoNS, readerPod, lines)
	say("Each token the pod reads (its log: one line per token, a fingerprint, never the token), with the time since the operator wrote it into the Secret:")
	var deadline <-chan time.Time
	seen := map[string]bool{}
	for {
		var raw string
		select {
		case <-ctx.Done():
			return res, nil
		case <-deadline:
			say("Watched for %s: %d rotated tokens reached the pod; Secret → pod: %s", duration, res.rotations, delayStats(res.delays))
			return res, nil
		case raw = <-lines:
		}
		l, ok := tokenline.Parse(raw)
		if !ok {
			say("%s | %s", readerPod, raw)
			continue
		}
		if seen[l.Fingerprint] { // a reopened log stream repeats lines
			continue
		}
		seen[l.Fingerprint] = true
		exp := "?"
		if !l.Expires.IsZero() {
			exp = l.Expires.Local().Format("15:04:05")
		}
		if len(seen) == 1 {
			say("%s read token %s (expires %s) at start, %s after the command started", readerPod, l.Fingerprint, exp, since(begin))
			if duration > 0 {
				deadline = time.After(duration)
			}
			continue
		}
		res.rotations++
		written, ok := d.secrets.writtenAt(l.Fingerprint)
		if !ok {
			say("rotation %d: %s read token %s (expires %s), which this command never saw in the Secret", res.rotations, readerPod, l.Fingerprint, exp)
			continue
		}
		delay := l.Seen.Sub(written)
		res.delays = append(res.delays, delay)
		say("rotation %d: %s read token %s (expires %s) %.2f s after the operator wrote it into the Secret", res.rotations, readerPod, l.Fingerprint, exp, delay.Seconds())
		if res.rotations == 1 {
			d.printConsumers(ctx)
		}
	}
}

// printConsumers shows what the operator reports about the pods that use the token.
func (d *demo) printConsumers(ctx context.Context) {
	tok := &authv1alpha1.MLflowAccessToken{}
	// The operator writes its status after the nudge: give it a moment.
	_ = waitFor(ctx, 3*time.Second, func() (bool, string) {
		err := d.c.Get(ctx, client.ObjectKey{Namespace: demoNS, Name: tokenName}, tok)
		cs := tok.Status.Consumers
		return err == nil && cs != nil && cs.Pods > 0 && cs.Nudged == cs.Pods, ""
	})
	if tok.Status.Consumers == nil {
		return
	}
	risk := "not reported"
	if c := meta.FindStatusCondition(tok.Status.Conditions, authv1alpha1.ConditionDeliveryAtRisk); c != nil {
		risk = string(c.Status) + " (" + c.Reason + ")"
	}
	say("The operator's status: %d consumer pod, %d nudged; DeliveryAtRisk %s", tok.Status.Consumers.Pods, tok.Status.Consumers.Nudged, risk)
}

// followLog sends the pod's log lines to out until ctx ends, reopening the stream if it breaks
// (the caller drops the lines a reopened stream repeats).
func followLog(ctx context.Context, cs kubernetes.Interface, ns, pod string, out chan<- string) {
	var since *metav1.Time
	for ctx.Err() == nil {
		r, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Follow: true, SinceTime: since}).Stream(ctx)
		if err == nil {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				select {
				case out <- sc.Text():
				case <-ctx.Done():
				}
			}
			r.Close()
		}
		since = &metav1.Time{Time: time.Now().Add(-2 * time.Second)}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// copyLog appends the pod's log to a file until ctx ends or the container stops.
func copyLog(ctx context.Context, cs kubernetes.Interface, ns, pod, path string) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	r, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Follow: true}).Stream(ctx)
	if err != nil {
		fmt.Fprintf(f, "(reading the log: %v)\n", err)
		return
	}
	defer r.Close()
	_, _ = io.Copy(f, r)
}
