package controllers

import (
	"cmp"
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/scope"
)

// This file reads what the user gives the operator: the Keycloak endpoint and CA, the client's
// credentials, the bootstrap token, the user's password. Secrets and ConfigMaps are read through
// the uncached reader: the cache holds only the operator's own Secrets, and a user's credentials
// should not sit in memory longer than needed.

// access says where and as whom to talk to Keycloak for obj.
type access struct {
	Endpoint keycloak.Endpoint
	Auth     keycloak.ClientAuth
	// assertionExpires is when Auth.Assertion (a service-account token) expires.
	assertionExpires time.Time
}

// access reads the credentials of a target: the CA bundle and the client's authentication.
func (r *MLflowAccessTokenReconciler) access(ctx context.Context, t *target) (access, *failure) {
	a := access{Endpoint: t.Endpoint, Auth: keycloak.ClientAuth{ClientID: t.ClientID}}
	ca, f := r.caBundle(ctx, t)
	if f != nil {
		return a, f
	}
	a.Endpoint.CABundle = ca
	switch {
	case t.secret != nil:
		s, f := r.userObject(ctx, t.secret.NamespacedName, t.watched, authv1alpha1.ReasonClientSecretNotFound, t.secret.field)
		if f != nil {
			return a, f
		}
		v, f := secretKey(s, t.secret.Key, authv1alpha1.ReasonClientSecretNotFound, t.secret.field)
		if f != nil {
			return a, f
		}
		a.Auth.Secret = string(v)
	case t.serviceAccount != nil:
		tok, exp, f := r.serviceAccountToken(ctx, *t.serviceAccount, t.Endpoint.IssuerURL())
		if f != nil {
			return a, f
		}
		a.Auth.Assertion, a.assertionExpires = tok, exp
	}
	return a, nil
}

// caBundle returns the PEM CA bundle that Keycloak's certificate must chain to (nil: the
// system's roots).
func (r *MLflowAccessTokenReconciler) caBundle(ctx context.Context, t *target) ([]byte, *failure) {
	return readCABundle(ctx, r.APIReader, r.Watched, t.ca, t.watched)
}

// readCABundle reads the CA bundle c names: from its watch when it is an issuer's (watched),
// else uncached.
func readCABundle(ctx context.Context, apiReader client.Reader, w Watched, c caRef, watched bool) ([]byte, *failure) {
	var pemData []byte
	switch {
	case c.inline != "":
		pemData = []byte(c.inline)
	case c.configMap != nil:
		cm := &corev1.ConfigMap{}
		var err error
		if watched {
			cm, err = w.ConfigMap(ctx, c.configMap.NamespacedName)
		} else {
			err = apiReader.Get(ctx, c.configMap.NamespacedName, cm)
		}
		if err != nil {
			if apierrors.IsNotFound(err) {
				return nil, &failure{Reason: authv1alpha1.ReasonCABundleNotFound, Err: err, Message: msgObjectMissing("ConfigMap", c.configMap.NamespacedName, c.field)}
			}
			return nil, asFailure(err)
		}
		v, ok := cm.Data[c.configMap.Key]
		if !ok {
			return nil, &failure{Reason: authv1alpha1.ReasonCABundleNotFound, Message: msgConfigMapKeyMissing(c.configMap.Name, c.configMap.Key, c.field)}
		}
		pemData = []byte(v)
	case c.secret != nil:
		s, f := readUserSecret(ctx, apiReader, w, c.secret.NamespacedName, watched, authv1alpha1.ReasonCABundleNotFound, c.field)
		if f != nil {
			return nil, f
		}
		v, f := secretKey(s, c.secret.Key, authv1alpha1.ReasonCABundleNotFound, c.field)
		if f != nil {
			return nil, f
		}
		pemData = v
	default:
		return nil, nil
	}
	if f := refused(scope.CABundle(pemData, c.field)); f != nil {
		return nil, f
	}
	return pemData, nil
}

// userObject reads a Secret the operator does not own (see readUserSecret).
func (r *MLflowAccessTokenReconciler) userObject(ctx context.Context, key types.NamespacedName, watched bool, reason, field string) (*corev1.Secret, *failure) {
	return readUserSecret(ctx, r.APIReader, r.Watched, key, watched, reason, field)
}

// readUserSecret reads a Secret the operator does not own: from its watch when it is an issuer's
// (watched), else uncached.
func readUserSecret(ctx context.Context, apiReader client.Reader, w Watched, key types.NamespacedName, watched bool, reason, field string) (*corev1.Secret, *failure) {
	s := &corev1.Secret{}
	var err error
	if watched {
		s, err = w.Secret(ctx, key)
	} else {
		err = apiReader.Get(ctx, key, s)
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &failure{Reason: reason, Err: err, Message: msgObjectMissing("Secret", key, field)}
		}
		return nil, asFailure(err)
	}
	return s, nil
}

// bootstrapToken reads the refresh or offline token a person put into the bootstrap Secret.
func (r *MLflowAccessTokenReconciler) bootstrapToken(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (string, *failure) {
	ref := obj.Spec.Grant.RefreshTokenSecretRef
	if ref == nil {
		return "", &failure{Reason: authv1alpha1.ReasonRefreshTokenNotFound, Message: "grant.refreshTokenSecretRef is not set"}
	}
	v, f := r.secretValue(ctx, obj, ref.Name, refreshKey(obj), authv1alpha1.ReasonRefreshTokenNotFound, "grant.refreshTokenSecretRef")
	return string(v), f
}

// userCredentials reads the user name and password of the Password grant.
func (r *MLflowAccessTokenReconciler) userCredentials(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (user, pass string, f *failure) {
	ref := obj.Spec.Grant.PasswordSecretRef
	if ref == nil {
		return "", "", &failure{Reason: authv1alpha1.ReasonUserCredentialsNotFound, Message: "grant.passwordSecretRef is not set"}
	}
	s, f := r.userSecret(ctx, obj, ref.Name, authv1alpha1.ReasonUserCredentialsNotFound, "grant.passwordSecretRef")
	if f != nil {
		return "", "", f
	}
	u, f := secretKey(s, cmp.Or(ref.UsernameKey, "username"), authv1alpha1.ReasonUserCredentialsNotFound, "grant.passwordSecretRef")
	if f != nil {
		return "", "", f
	}
	p, f := secretKey(s, cmp.Or(ref.PasswordKey, "password"), authv1alpha1.ReasonUserCredentialsNotFound, "grant.passwordSecretRef")
	return string(u), string(p), f
}

// secretValue reads one non-empty key of a user's Secret.
func (r *MLflowAccessTokenReconciler) secretValue(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, name, key, reason, field string) ([]byte, *failure) {
	s, f := r.userSecret(ctx, obj, name, reason, field)
	if f != nil {
		return nil, f
	}
	return secretKey(s, key, reason, field)
}

func (r *MLflowAccessTokenReconciler) userSecret(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, name, reason, field string) (*corev1.Secret, *failure) {
	return r.userObject(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: name}, false, reason, field)
}

func secretKey(s *corev1.Secret, key, reason, field string) ([]byte, *failure) {
	v, ok := s.Data[key]
	if !ok {
		return nil, &failure{Reason: reason, Message: msgSecretKeyMissing(s.Name, key, field, keysOf(s.Data))}
	}
	if len(v) == 0 {
		return nil, &failure{Reason: reason, Message: msgSecretKeyEmpty(s.Name, key, field)}
	}
	return v, nil
}

func refreshKey(obj *authv1alpha1.MLflowAccessToken) string {
	if ref := obj.Spec.Grant.RefreshTokenSecretRef; ref != nil && ref.Key != "" {
		return ref.Key
	}
	return "refresh-token"
}

// scopes are the scopes requested for the grant; Password with offline adds offline_access.
func scopes(obj *authv1alpha1.MLflowAccessToken) []string {
	s := slices.Clone(obj.Spec.Grant.Scopes)
	if obj.Spec.Grant.Type == authv1alpha1.GrantPassword && obj.Spec.Grant.Offline && !slices.Contains(s, "offline_access") {
		s = append(s, "offline_access")
	}
	return s
}

func keysOf(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// pendingRequest reports whether annotation key holds a request not yet honoured.
func pendingRequest(obj *authv1alpha1.MLflowAccessToken, key, honoured string) bool {
	v := obj.Annotations[key]
	return v != "" && v != honoured
}
