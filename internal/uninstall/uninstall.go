// Package uninstall cleans up after the operator when it is uninstalled, so that no token stays
// unrevoked and no namespace hangs on the operator's finalizer. The Helm chart runs it as a
// pre-delete hook (`manager uninstall`, a Job with the operator's image), while the operator is
// still running:
//
//   - ModeRevoke deletes every MLflowAccessToken the operator manages and waits until the
//     operator has revoked each token, ended its session and removed its finalizer. What is left
//     when the time is up loses the finalizer without revocation, and Run returns an error that
//     names it: nothing hangs, and the person uninstalling learns which tokens live on until
//     they expire.
//   - ModeOrphan keeps the resources and their Secrets, for a re-install: it stops the operator
//     (scales its Deployment to zero and waits for its pods to go, or the running operator would
//     put the finalizer straight back) and removes the finalizer. Tokens are neither renewed nor
//     revoked; they expire by themselves, unless an operator adopts the resources again, which
//     then carries on with the tokens in their Secrets.
//
// It reads and writes only object metadata, so it works whatever the resources' spec looks like.
package uninstall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// Finalizer is the operator's finalizer on MLflowAccessTokens (and on their Secrets): the
// reconciler removes it after revoking the token.
const Finalizer = authv1alpha1.Finalizer

// Mode says what happens to the resources.
type Mode string

const (
	// ModeRevoke deletes the resources; the running operator revokes their tokens.
	ModeRevoke Mode = "revoke"
	// ModeOrphan stops the operator and removes its finalizer; resources and tokens stay.
	ModeOrphan Mode = "orphan"
)

// ParseMode checks a mode given on the command line.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeRevoke, ModeOrphan:
		return m, nil
	}
	return "", fmt.Errorf("unknown mode %q: want %q or %q", s, ModeRevoke, ModeOrphan)
}

// Options say what to clean up.
type Options struct {
	Mode Mode
	// Timeout bounds the whole run. In ModeRevoke, what is not revoked by then is orphaned.
	Timeout time.Duration
	// Namespaces the operator watches (empty: all).
	Namespaces []string
	// OperatorDeployment is the operator's Deployment, which ModeOrphan scales to zero first.
	// Empty: the operator is known to be stopped already.
	OperatorDeployment types.NamespacedName
	// PollInterval is how often progress is checked (default 2 s).
	PollInterval time.Duration
}

// Result says what was done.
type Result struct {
	// Deleted are the resources deleted (ModeRevoke), as namespace/name.
	Deleted []string
	// Orphaned are the resources whose finalizer was removed without revocation.
	Orphaned []string
}

// tokenGVK is the kind cleaned up; only its metadata is read.
var tokenGVK = authv1alpha1.GroupVersion.WithKind("MLflowAccessToken")

// ErrNotRevoked is returned (wrapped) when ModeRevoke had to orphan resources.
var ErrNotRevoked = errors.New("not every token was revoked")

// Run cleans up. c needs, on MLflowAccessTokens in the namespaces concerned: list and delete
// (ModeRevoke), get and patch (finalizer removal); for ModeOrphan with a Deployment: get and
// patch on it and list on pods in its namespace.
func Run(ctx context.Context, c client.Client, o Options, log logr.Logger) (Result, error) {
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.Timeout <= 0 {
		return Result{}, errors.New("the timeout must be positive")
	}
	deadline, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	switch o.Mode {
	case ModeRevoke:
		return revoke(ctx, deadline, c, o, log)
	case ModeOrphan:
		return orphan(deadline, c, o, log)
	}
	return Result{}, fmt.Errorf("unknown mode %q", o.Mode)
}

// revoke deletes every resource and waits for the operator to revoke and release them. Resources
// that appear meanwhile (a GitOps tool re-creating them) are deleted too.
func revoke(ctx, deadline context.Context, c client.Client, o Options, log logr.Logger) (Result, error) {
	var res Result
	deleted := map[string]bool{}
	lastRemaining := -1
	for deadline.Err() == nil {
		remaining, served, err := deleteAll(deadline, c, o.Namespaces, deleted, &res, log)
		switch {
		case err != nil && deadline.Err() == nil:
			return res, err
		case err != nil:
			continue // out of time
		case !served:
			log.Info("MLflowAccessToken is not served (no CRD): nothing to clean up")
			return res, nil
		case remaining == 0:
			log.Info("Every MLflowAccessToken is gone or released by the operator", "deleted", len(res.Deleted))
			return res, nil
		case remaining != lastRemaining:
			log.Info("Waiting for the operator to revoke tokens", "remaining", remaining)
			lastRemaining = remaining
		}
		select {
		case <-deadline.Done():
		case <-time.After(o.PollInterval):
		}
	}

	// Out of time: the operator is not running, cannot reach Keycloak, or is slower than the
	// timeout. Release what is left so that no namespace hangs on it, and say so.
	cleanup, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	items, err := list(cleanup, c, o.Namespaces)
	if err != nil {
		return res, fmt.Errorf("listing MLflowAccessTokens after the timeout of %s: %w", o.Timeout, err)
	}
	for i := range items {
		obj := &items[i]
		if !controllerutil.ContainsFinalizer(obj, Finalizer) {
			continue
		}
		if err := removeFinalizer(cleanup, c, obj); err != nil {
			return res, err
		}
		key := obj.Namespace + "/" + obj.Name
		res.Orphaned = append(res.Orphaned, key)
		log.Info("Removed the operator's finalizer without revocation: the token stays valid until it expires", "namespace", obj.Namespace, "name", obj.Name)
	}
	if err := releaseSecrets(cleanup, c, o.Namespaces, log); err != nil {
		return res, err
	}
	if len(res.Orphaned) == 0 {
		return res, nil
	}
	return res, fmt.Errorf("%w within %s (is the operator running, can it reach Keycloak?): %d MLflowAccessToken(s) were released without revocation so that nothing hangs: %s",
		ErrNotRevoked, o.Timeout, len(res.Orphaned), strings.Join(res.Orphaned, ", "))
}

// deleteAll deletes the resources not being deleted yet and counts those that still carry the
// operator's finalizer. served is false when the kind is not served.
func deleteAll(ctx context.Context, c client.Client, namespaces []string, deleted map[string]bool, res *Result, log logr.Logger) (remaining int, served bool, err error) {
	items, err := list(ctx, c, namespaces)
	if err != nil || items == nil {
		return 0, false, err
	}
	for i := range items {
		obj := &items[i]
		key := obj.Namespace + "/" + obj.Name
		if obj.DeletionTimestamp.IsZero() {
			// The operator deletes its Secrets after revoking (and the garbage collector would,
			// through their owner references).
			if err := c.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
				return 0, true, fmt.Errorf("deleting MLflowAccessToken %s: %w", key, err)
			}
			if !deleted[key] {
				deleted[key] = true
				res.Deleted = append(res.Deleted, key)
				log.Info("Deleted MLflowAccessToken; the operator revokes its token", "namespace", obj.Namespace, "name", obj.Name)
			}
		}
		// Only our finalizer is waited for: others belong to someone else.
		if controllerutil.ContainsFinalizer(obj, Finalizer) {
			remaining++
		}
	}
	return remaining, true, nil
}

// orphan stops the operator and removes its finalizer from every resource.
func orphan(ctx context.Context, c client.Client, o Options, log logr.Logger) (Result, error) {
	var res Result
	if o.OperatorDeployment.Name != "" {
		if err := stopOperator(ctx, c, o.OperatorDeployment, o.PollInterval, log); err != nil {
			return res, err
		}
	}
	items, err := list(ctx, c, o.Namespaces)
	if err != nil {
		return res, err
	}
	if items == nil {
		log.Info("MLflowAccessToken is not served (no CRD): nothing to clean up")
		return res, nil
	}
	for i := range items {
		obj := &items[i]
		if !controllerutil.ContainsFinalizer(obj, Finalizer) {
			continue
		}
		if err := removeFinalizer(ctx, c, obj); err != nil {
			return res, err
		}
		res.Orphaned = append(res.Orphaned, obj.Namespace+"/"+obj.Name)
		log.Info("Removed the operator's finalizer; the resource and its Secret stay", "namespace", obj.Namespace, "name", obj.Name)
	}
	if err := releaseSecrets(ctx, c, o.Namespaces, log); err != nil {
		return res, err
	}
	log.Info("The operator's resources are orphaned: tokens are no longer renewed or revoked", "orphaned", len(res.Orphaned))
	return res, nil
}

// releaseSecrets removes the operator's finalizer from its own Secrets (it keeps them readable
// until their resource's deletion has revoked): with no operator left to revoke, a namespace
// deletion would otherwise hang on them. It lists and patches metadata only, never a Secret's data.
func releaseSecrets(ctx context.Context, c client.Client, namespaces []string, log logr.Logger) error {
	if len(namespaces) == 0 {
		namespaces = []string{""}
	}
	released := 0
	for _, ns := range namespaces {
		l := &metav1.PartialObjectMetadataList{}
		l.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
		if err := c.List(ctx, l, client.InNamespace(ns), client.MatchingLabels{tokensecret.LabelManagedBy: tokensecret.ManagedByValue}); err != nil {
			return fmt.Errorf("listing the operator's Secrets%s: %w", inNamespace(ns), err)
		}
		for i := range l.Items {
			obj := &l.Items[i]
			obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
			if !controllerutil.ContainsFinalizer(obj, Finalizer) {
				continue
			}
			if err := removeFinalizer(ctx, c, obj); err != nil {
				return err
			}
			released++
		}
	}
	if released > 0 {
		log.Info("Removed the operator's finalizer from its Secrets", "secrets", released)
	}
	return nil
}

// stopOperator scales the operator's Deployment to zero and waits until none of its pods exist:
// a running operator would add its finalizer back to every resource it sees without one.
func stopOperator(ctx context.Context, c client.Client, key types.NamespacedName, poll time.Duration, log logr.Logger) error {
	dep := &appsv1.Deployment{}
	if err := c.Get(ctx, key, dep); err != nil {
		if apierrors.IsNotFound(err) {
			log.Info("The operator's Deployment does not exist; assuming the operator is stopped", "deployment", key)
			return nil
		}
		return fmt.Errorf("reading the operator's Deployment %s: %w", key, err)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 0 {
		patch := client.MergeFrom(dep.DeepCopy())
		zero := int32(0)
		dep.Spec.Replicas = &zero
		if err := c.Patch(ctx, dep, patch); err != nil {
			return fmt.Errorf("scaling the operator's Deployment %s to zero: %w", key, err)
		}
		log.Info("Scaled the operator's Deployment to zero", "deployment", key)
	}
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil {
		return fmt.Errorf("the operator's Deployment %s has an invalid selector: %w", key, err)
	}
	for {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(key.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
			return fmt.Errorf("listing the operator's pods: %w", err)
		}
		if len(pods.Items) == 0 {
			log.Info("The operator's pods are gone", "deployment", key)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the operator's pods (%d) did not stop in time: its finalizers would come back; nothing was changed", len(pods.Items))
		case <-time.After(poll):
		}
	}
}

// list returns the resources' metadata in the namespaces (all when none), or nil when the kind
// is not served.
func list(ctx context.Context, c client.Client, namespaces []string) ([]metav1.PartialObjectMetadata, error) {
	if len(namespaces) == 0 {
		namespaces = []string{""}
	}
	out := []metav1.PartialObjectMetadata{}
	for _, ns := range namespaces {
		l := &metav1.PartialObjectMetadataList{}
		l.SetGroupVersionKind(tokenGVK.GroupVersion().WithKind(tokenGVK.Kind + "List"))
		if err := c.List(ctx, l, client.InNamespace(ns)); err != nil {
			if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
				return nil, nil
			}
			return nil, fmt.Errorf("listing MLflowAccessTokens%s: %w", inNamespace(ns), err)
		}
		for _, item := range l.Items {
			item.SetGroupVersionKind(tokenGVK)
			out = append(out, item)
		}
	}
	return out, nil
}

func inNamespace(ns string) string {
	if ns == "" {
		return ""
	}
	return " in " + ns
}

// removeFinalizer removes the operator's finalizer with an optimistic lock, re-reading on
// conflicts.
func removeFinalizer(ctx context.Context, c client.Client, obj *metav1.PartialObjectMetadata) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !controllerutil.ContainsFinalizer(obj, Finalizer) {
			return nil
		}
		patch := client.MergeFromWithOptions(obj.DeepCopy(), client.MergeFromWithOptimisticLock{})
		obj.SetFinalizers(slices.DeleteFunc(slices.Clone(obj.GetFinalizers()), func(f string) bool { return f == Finalizer }))
		err := c.Patch(ctx, obj, patch)
		switch {
		case err == nil, apierrors.IsNotFound(err):
			return nil
		case apierrors.IsConflict(err):
			if gerr := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); gerr != nil {
				if apierrors.IsNotFound(gerr) {
					return nil
				}
				return gerr
			}
			return err
		}
		return fmt.Errorf("removing the finalizer of %s %s/%s: %w", obj.GetObjectKind().GroupVersionKind().Kind, obj.Namespace, obj.Name, err)
	})
}
