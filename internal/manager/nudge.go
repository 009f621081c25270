package manager

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/mlflow-token-operator/mlflow-token-operator/controllers"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/nudge"
)

// withConsumerPods adds the pod cache the nudges read: only pods labelled as consumers, stripped
// to what the nudge needs (internal/nudge). Without nudging, the operator caches no pod at all.
func withConsumerPods(c cache.Options, on bool) cache.Options {
	if on {
		c.ByObject[&corev1.Pod{}] = nudge.CacheConfig()
	}
	return c
}

// setupDelivery starts the Nudger (when on) and returns the reconciler's delivery settings;
// notify is called when a rotation's nudges are done.
func setupDelivery(mgr ctrl.Manager, o Options, notify func(types.NamespacedName)) (controllers.Delivery, error) {
	d := controllers.Delivery{KubeletSyncFrequency: o.KubeletSyncFrequency}
	if !o.NudgePods {
		return d, nil
	}
	no := o.Nudge
	no.Notify = notify
	n, err := nudge.Setup(context.Background(), mgr, no)
	if err != nil {
		return d, err
	}
	d.Nudger = n
	return d, nil
}
