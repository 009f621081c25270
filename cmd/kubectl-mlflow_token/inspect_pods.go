package main

import (
	"context"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/consumers"
)

// reportPod is a pod in the resource's namespace that reads its Secret.
type reportPod struct {
	Name  string `json:"name"`
	Phase string `json:"phase,omitempty"`
	// Labelled: the pod has auth.mlflow-token-operator.io/consumer=true.
	Labelled bool `json:"consumerLabel"`
	// Nudged: the operator nudges it after each rotation (unless its nudging is turned off), so
	// its kubelet rewrites the volume at once.
	Nudged bool            `json:"nudged"`
	Reads  []consumers.Ref `json:"reads"`
	// Delivery says how new tokens reach it.
	Delivery string `json:"delivery"`
}

// podsPage bounds each list request: namespaces with thousands of pods are read in pages.
const podsPage = 500

// consumerPods lists the pods of the namespace that read the Secret (volume, env, envFrom),
// sorted by name, with the operator's own verdict on nudging them (internal/consumers).
func consumerPods(ctx context.Context, c client.Reader, ns, secret string) ([]reportPod, string) {
	var out []reportPod
	opts := []client.ListOption{client.InNamespace(ns), client.Limit(podsPage)}
	for {
		list := &corev1.PodList{}
		err := c.List(ctx, list, opts...)
		switch {
		case apierrors.IsForbidden(err):
			return nil, fmt.Sprintf("you may not list pods in namespace %s", ns)
		case err != nil:
			return nil, "cannot list pods: " + err.Error()
		}
		for i := range list.Items {
			if p, ok := consumerPod(&list.Items[i], secret); ok {
				out = append(out, p)
			}
		}
		if list.Continue == "" {
			break
		}
		opts = []client.ListOption{client.InNamespace(ns), client.Limit(podsPage), client.Continue(list.Continue)}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, ""
}

func consumerPod(pod *corev1.Pod, secret string) (reportPod, bool) {
	refs := consumers.Refs(pod, secret)
	if len(refs) == 0 {
		return reportPod{}, false
	}
	p := reportPod{Name: pod.Name, Phase: string(pod.Status.Phase), Labelled: pod.Labels[authv1alpha1.LabelConsumer] == "true", Reads: refs}
	use := consumers.SecretUse(pod, secret)
	switch {
	case consumers.Finished(pod):
		p.Delivery = "finished: nothing to deliver"
	case use == consumers.NotUsed:
		p.Delivery = "only an init container reads it, before the workload starts"
	case use == consumers.NotUpdatable:
		p.Delivery = "env or subPath only: keeps the token it started with until it restarts (mount the Secret as a directory)"
	case p.Labelled:
		p.Nudged = true
		p.Delivery = "nudged after each rotation: new token within seconds"
	default:
		p.Delivery = "not nudged (no label " + authv1alpha1.LabelConsumer + "=true): new token at the kubelet's periodic sync, often a minute or more"
	}
	return p, true
}
