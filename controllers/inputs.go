package controllers

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
)

// This file reads what the user gives the operator: the Keycloak endpoint and CA, the client's
// credentials, the bootstrap token, the user's password. Secrets and ConfigMaps are read through
// the uncached reader: the cache holds only the operator's own Secrets, and a user's credentials
// should not sit in memory longer than needed.

// access says where and as whom to talk to Keycloak for obj.
type access struct {
	Endpoint keycloak.Endpoint
	Auth     keycloak.ClientAuth
}

// access returns the endpoint (with its CA bundle) and the client's authentication.
func (r *MLflowAccessTokenReconciler) access(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (access, *failure) {
	k := obj.Spec.Keycloak
	a := access{Endpoint: keycloak.Endpoint{URL: k.URL, Realm: k.Realm}}
	ca, f := r.caBundle(ctx, obj)
	if f != nil {
		return a, f
	}
	a.Endpoint.CABundle = ca
	secret, f := r.secretValue(ctx, obj, k.ClientSecretRef.Name, cmp.Or(k.ClientSecretRef.Key, "client-secret"),
		authv1alpha1.ReasonClientSecretNotFound, "keycloak.clientSecretRef")
	if f != nil {
		return a, f
	}
	a.Auth = keycloak.ClientAuth{ClientID: k.ClientID, Secret: string(secret)}
	return a, nil
}

// caBundle returns the PEM CA bundle that Keycloak's certificate must chain to (nil: the
// system's roots).
func (r *MLflowAccessTokenReconciler) caBundle(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) ([]byte, *failure) {
	k := obj.Spec.Keycloak
	var pemData []byte
	switch {
	case k.CABundle != "":
		pemData = []byte(k.CABundle)
	case k.CAConfigMapRef != nil:
		ref := k.CAConfigMapRef
		key := cmp.Or(ref.Key, "ca.crt")
		cm := &corev1.ConfigMap{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: ref.Name}, cm); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, &failure{Reason: authv1alpha1.ReasonCABundleNotFound, Err: err, Message: msgConfigMapMissing(ref.Name, obj.Namespace)}
			}
			return nil, asFailure(err)
		}
		v, ok := cm.Data[key]
		if !ok {
			return nil, &failure{Reason: authv1alpha1.ReasonCABundleNotFound, Message: msgConfigMapKeyMissing(ref.Name, key)}
		}
		pemData = []byte(v)
	default:
		return nil, nil
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pemData) {
		return nil, &failure{Reason: authv1alpha1.ReasonInvalidCABundle, Message: "the CA bundle holds no PEM certificate"}
	}
	return pemData, nil
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
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &failure{Reason: reason, Err: err, Message: msgSecretMissing(name, field, obj.Namespace)}
		}
		return nil, asFailure(err)
	}
	return s, nil
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

// inputsHash identifies the spec fields that shape the token; a change to any of them makes
// the operator obtain a new token even when the current one is not due.
func inputsHash(obj *authv1alpha1.MLflowAccessToken) string {
	k := obj.Spec.Keycloak
	sc := slices.Clone(obj.Spec.Grant.Scopes)
	slices.Sort(sc)
	b, _ := json.Marshal([]any{k.URL, k.Realm, k.ClientID, k.ClientSecretRef.Name, k.ClientSecretRef.Key, obj.Spec.Grant.Type, sc})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
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
