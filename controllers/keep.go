package controllers

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// Deleting a namespace must end every session, whatever order its objects go in. The namespace
// controller may delete the Secrets, ServiceAccounts and issuers a resource depends on before the
// resource itself; its deletion would then have nothing to revoke with. So the operator holds on to
// what revocation needs until revocation is done:
//   - its own Secrets (the consumer Secret with the access token, the state Secret with the refresh
//     token) carry its finalizer, so they stay readable while they are deleted;
//   - the state Secret also keeps a kit: the endpoint, the client, and a copy of the client's
//     credentials when they live in the resource's own namespace (a client secret, or a
//     service-account token while it is valid);
//   - no token is obtained for a resource whose namespace is being deleted;
//   - Secrets whose resource is gone without having revoked (its finalizer was removed by hand)
//     are revoked with their kit before they are let go.

// keepKit records what revocation needs in the state Secret, when it changed, and the token the
// rotation superseded (sup, nil: none; superseded.go), revoking at once one still pending from the
// rotation before (best effort: a conflict is retried at the next rotation). state is the version
// this reconcile last wrote (nil: read it from the cache).
func (r *MLflowAccessTokenReconciler) keepKit(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, t *target, a access, state *corev1.Secret, sup *tokensecret.Superseded) {
	kit := tokensecret.Kit{URL: t.Endpoint.URL, Realm: t.Endpoint.Realm, ClientID: t.ClientID, CABundle: a.Endpoint.CABundle, AllowHTTP: t.allowHTTP}
	if t.secret != nil && t.secret.Namespace == obj.Namespace {
		kit.ClientSecret = a.Auth.Secret
	}
	if a.Auth.Assertion != "" {
		kit.Assertion, kit.AssertionExpires = a.Auth.Assertion, a.assertionExpires
	}
	name := tokensecret.StateSecretName(obj)
	if state == nil {
		var err error
		if state, err = r.ownedSecret(ctx, obj, name, r.Client); err != nil {
			return
		}
	}
	r.revokePendingSuperseded(ctx, obj, a, state)
	if _, err := r.writeOwned(ctx, obj, state, name, func(s *corev1.Secret) bool {
		kitChanged := tokensecret.ApplyKit(s, kit)
		return tokensecret.ApplySuperseded(s, sup) || kitChanged
	}, writeOpts{}); err != nil {
		log.FromContext(ctx).V(1).Info("Could not record the revocation kit; next rotation", "error", err.Error())
	}
}

// revocationAccess is how to reach Keycloak to revoke: through the resource's target as usual,
// or, when its sources are gone (a namespace being deleted), with the kit of the state Secret
// (sealed: see trust.go).
func (r *MLflowAccessTokenReconciler) revocationAccess(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, kit *tokensecret.Kit) (access, *failure) {
	t, f := r.resolveTarget(ctx, obj)
	if f == nil {
		a, af := r.access(ctx, t)
		if af == nil {
			return a, nil
		}
		f = af
	}
	a, ok, kf := r.kitAccess(kit)
	switch {
	case ok:
		log.FromContext(ctx).Info("Revoking with the credentials kept in the state Secret", "unavailable", f.Message)
		return a, nil
	case kf != nil:
		return access{}, kf
	}
	return access{}, f
}

// kitAccess turns a kit into an access, when it holds usable credentials. The kit's URL goes
// through the guardrails as any other: a kit written when the platform allowed a host it no longer
// allows is not used (f says why).
func (r *MLflowAccessTokenReconciler) kitAccess(kit *tokensecret.Kit) (a access, ok bool, f *failure) {
	if kit == nil {
		return access{}, false, nil
	}
	if f := checkURL(r.Guardrails, kit.URL, kit.AllowHTTP, ""); f != nil {
		return access{}, false, f
	}
	a = access{Endpoint: keycloak.Endpoint{URL: kit.URL, Realm: kit.Realm, CABundle: kit.CABundle}, Auth: keycloak.ClientAuth{ClientID: kit.ClientID}}
	switch {
	case kit.ClientSecret != "":
		a.Auth.Secret = kit.ClientSecret
	case kit.Assertion != "" && r.now().Before(kit.AssertionExpires):
		a.Auth.Assertion = kit.Assertion
	default:
		return access{}, false, nil
	}
	return a, true, nil
}

// namespaceTerminating reports whether ns is being deleted (from the cache of namespace
// metadata; false when that cannot be told).
func (r *MLflowAccessTokenReconciler) namespaceTerminating(ctx context.Context, ns string) bool {
	n, f := r.namespace(ctx, ns)
	return f == nil && n.DeletionTimestamp != nil
}

// releaseDeleted handles one of the resource's Secrets being deleted while the resource lives
// (by hand, or by a namespace deletion that took the Secrets first). In a namespace being deleted
// it is kept, for the resource's own deletion to revoke with; otherwise the finalizer is removed so
// that it goes, and the next reconcile writes a new one.
func (r *MLflowAccessTokenReconciler) releaseDeleted(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, s *corev1.Secret) (ctrl.Result, error) {
	if r.namespaceTerminating(ctx, obj.Namespace) {
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
	}
	if err := r.releaseSecret(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	log.FromContext(ctx).Info("A Secret of the resource was deleted; it will be written anew", "secret", s.Name)
	return ctrl.Result{RequeueAfter: time.Second}, nil
}

// releaseSecret removes the operator's finalizer from one of its Secrets.
func (r *MLflowAccessTokenReconciler) releaseSecret(ctx context.Context, s *corev1.Secret) error {
	if !slices.Contains(s.Finalizers, authv1alpha1.Finalizer) {
		return nil
	}
	if tokensecret.IsStub(s) {
		// The cache's stub of an unsealed Secret: update the whole Secret, not the stub.
		full := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(s), full); err != nil {
			return client.IgnoreNotFound(err)
		}
		s = full
	}
	s = s.DeepCopy()
	s.Finalizers = slices.DeleteFunc(s.Finalizers, func(f string) bool { return f == authv1alpha1.Finalizer })
	r.written.forget(s)
	return client.IgnoreNotFound(r.Update(ctx, s))
}

// releaseOrphans revokes and lets go the Secrets of a resource that is gone without having
// revoked (someone removed its finalizer by hand, or deleted it while the operator was not
// running): their finalizer kept them, and the state Secret's kit says how to revoke. Only
// Secrets sealed for that resource count (trust.go): one forged with the operator's labels, its
// finalizer and an owner reference is left alone, and gets no request anywhere. The Secrets are
// found through an index of their controller's name: the cost is the resource's own Secrets,
// whatever else its namespace holds.
func (r *MLflowAccessTokenReconciler) releaseOrphans(ctx context.Context, key client.ObjectKey) error {
	var l corev1.SecretList
	if err := r.List(ctx, &l, client.InNamespace(key.Namespace), client.MatchingFields{IndexSecretController: key.Name}); err != nil {
		return err
	}
	var orphans []*corev1.Secret
	var kit *tokensecret.Kit
	var chain *tokensecret.Chain
	for i := range l.Items {
		s := &l.Items[i]
		if !ownedByToken(s, key.Name) || !slices.Contains(s.Finalizers, authv1alpha1.Finalizer) || !tokensecret.Verify(s, r.Seal) {
			continue
		}
		// All of them sealed for the same resource: a sealed Secret of an older resource of the
		// same name does not lend its kit to another's Secrets.
		if len(orphans) > 0 && metav1.GetControllerOfNoCopy(s).UID != metav1.GetControllerOfNoCopy(orphans[0]).UID {
			continue
		}
		orphans = append(orphans, s)
		if s.Labels[tokensecret.LabelRole] == tokensecret.RoleRefreshState {
			kit, chain = tokensecret.ReadKit(s), tokensecret.ReadChain(s)
		}
	}
	if len(orphans) == 0 {
		return nil
	}
	logger := log.FromContext(ctx)
	a, ok, kf := r.kitAccess(kit)
	if kf != nil {
		logger.Info("Not revoking the tokens of a resource deleted without revocation: its kit names a Keycloak the platform does not allow", "message", kf.Message)
	}
	if ok {
		if chain != nil && chain.RefreshToken != "" {
			if err := r.revoke(ctx, a, chain.RefreshToken, "refresh_token"); err != nil {
				logger.Info("Could not revoke the refresh token of a deleted resource", "error", err.Error())
			}
		}
		for _, s := range orphans {
			if st, ok := tokensecret.Read(s); ok && r.now().Before(st.ExpiresAt) {
				if err := r.revoke(ctx, a, st.AccessToken, "access_token"); err != nil {
					logger.Info("Could not revoke the access token of a deleted resource", "error", err.Error())
				}
			}
		}
		logger.Info("Revoked the tokens of a resource deleted without revocation", "secrets", len(orphans))
	} else {
		logger.Info("A resource was deleted without revocation and left no credentials to revoke with", "secrets", len(orphans))
	}
	for _, s := range orphans {
		if err := r.releaseSecret(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

func ownedByToken(s *corev1.Secret, name string) bool {
	return slices.ContainsFunc(s.OwnerReferences, func(o metav1.OwnerReference) bool {
		return o.Kind == "MLflowAccessToken" && o.Name == name && o.APIVersion == authv1alpha1.GroupVersion.String()
	})
}
