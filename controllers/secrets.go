package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// This file is the one writer of the operator's own Secrets: the consumer Secret that pods mount
// and the refresh chain's state Secret. Both belong to the resource (controller reference); a
// Secret of that name that belongs to someone else is never touched.

// ownedSecret returns the Secret called name if this resource may write it: nil when it does
// not exist, a SecretConflict failure when it belongs to someone else.
func (r *MLflowAccessTokenReconciler) ownedSecret(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, name string, reader client.Reader) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := reader.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: name}, s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !metav1.IsControlledBy(s, obj) {
		return nil, &failure{Reason: authv1alpha1.ReasonSecretConflict, Message: msgConflict(name)}
	}
	return s, nil
}

// writeOpts say how writeOwned writes.
type writeOpts struct {
	// adopt: when creating finds the Secret exists and is ours (its label was removed, so the
	// cache did not see it), update it. The state Secret must not be adopted: there, an existing
	// Secret means another writer got there first, and its chain must not be overwritten.
	adopt bool
	// dryRun: ask the API server whether the write would pass, without writing.
	dryRun bool
}

// writeOwned creates the Secret called name with what mutate puts in it, or updates existing in
// place when mutate changes it. It never deletes and re-creates a Secret: a mounted volume
// follows updates of the Secret it was created from, not a new one. An update carries the
// resourceVersion it was based on, so a concurrent write makes it fail with a conflict. It
// returns the Secret as written (existing when nothing changed).
//
// Every write is sealed (trust.go). A Secret whose seal does not hold is scrubbed of everything
// the operator would write before mutate fills it: what a tenant placed there is never sealed as
// the operator's own. A stub from the cache is read whole from the API server first.
func (r *MLflowAccessTokenReconciler) writeOwned(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, existing *corev1.Secret, name string, mutate func(*corev1.Secret) bool, o writeOpts) (*corev1.Secret, error) {
	var dry []client.CreateOption
	var dryUpdate []client.UpdateOption
	if o.dryRun {
		dry, dryUpdate = []client.CreateOption{client.DryRunAll}, []client.UpdateOption{client.DryRunAll}
	}
	if tokensecret.IsStub(existing) {
		full, err := r.ownedSecret(ctx, obj, name, r.APIReader)
		if err != nil {
			return nil, err
		}
		existing = full
	}
	if existing == nil {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: obj.Namespace}}
		mutate(s)
		if err := controllerutil.SetControllerReference(obj, s, r.Scheme()); err != nil {
			return nil, err
		}
		tokensecret.Seal(s, r.Seal)
		if !o.dryRun {
			r.written.expect(s)
		}
		err := r.Create(ctx, s, dry...)
		switch {
		case err == nil:
			if !o.dryRun {
				r.written.record(s)
			}
			return s, nil
		case !apierrors.IsAlreadyExists(err):
			return nil, err
		}
		// The cache cannot see Secrets without our label: look it up directly.
		found, gerr := r.ownedSecret(ctx, obj, name, r.APIReader)
		if gerr != nil {
			return nil, gerr
		}
		if found == nil || !o.adopt {
			return nil, err
		}
		existing = found
	}
	s := existing.DeepCopy()
	trusted := tokensecret.Verify(existing, r.Seal)
	if !trusted {
		tokensecret.Scrub(s)
	}
	changed := mutate(s)
	if tokensecret.Seal(s, r.Seal) {
		changed = true
	}
	if !changed && trusted {
		return existing, nil
	}
	if !o.dryRun {
		r.written.expect(s)
	}
	if err := r.Update(ctx, s, dryUpdate...); err != nil {
		return nil, err
	}
	if !o.dryRun {
		r.written.record(s)
	}
	return s, nil
}

// deleteOwned deletes s if it is still the Secret that was read (same UID).
func (r *MLflowAccessTokenReconciler) deleteOwned(ctx context.Context, s *corev1.Secret) error {
	if err := r.Delete(ctx, s, client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	r.written.forget(s)
	return nil
}

// deleteStale removes a Secret this resource wrote before spec.secretName changed. Best effort:
// a failure is logged, and the Secret goes with the resource at the latest (owner reference).
func (r *MLflowAccessTokenReconciler) deleteStale(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, name string) {
	s, err := r.ownedSecret(ctx, obj, name, r.APIReader)
	if err != nil || s == nil {
		return
	}
	if err := r.releaseSecret(ctx, s); err != nil {
		log.FromContext(ctx).Info("Could not release the previous Secret", "secret", name, "error", err.Error())
		return
	}
	if err := r.deleteOwned(ctx, s); err != nil {
		log.FromContext(ctx).Info("Could not delete the previous Secret", "secret", name, "error", err.Error())
	}
}
