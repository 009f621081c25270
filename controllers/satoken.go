package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
)

// Service-account tokens authenticate clients that use Keycloak's federated client
// authentication: the operator asks the API server for a token of the ServiceAccount (TokenRequest,
// audience = the realm's issuer URL) and sends it as the client assertion. Keycloak accepts the
// same token more than once, so one token serves every resource with the same ServiceAccount and
// audience until most of its life is used: a fraction of a TokenRequest per rotation.

// saTokens caches service-account tokens by ServiceAccount and audience.
type saTokens struct {
	mu sync.Mutex
	m  map[saKey]saToken
	// locks serialize the look-up and request per key: first issuances running at the same time
	// under one ServiceAccount make one TokenRequest, and the others take its token from the
	// cache (without it a burst of 200 made 9).
	locks map[saKey]chan struct{}
}

type saKey struct {
	sa       types.NamespacedName
	audience string
}

type saToken struct {
	token           string
	uid             types.UID
	issued, expires time.Time
}

// reuseFraction of a service-account token's life is used before a new one is requested.
const reuseFraction = 2.0 / 3.0

// serviceAccountToken returns a token of sa for audience: the cached one while it has more than a
// third of its life left and the ServiceAccount is the one it was issued for (same UID), else a
// new one. The ServiceAccount's existence is checked from the cache of ServiceAccount metadata at
// every call, so a deleted ServiceAccount stops the issuance at once (Keycloak checks only the
// token's signature, and would accept its tokens until they expire).
func (r *MLflowAccessTokenReconciler) serviceAccountToken(ctx context.Context, sa types.NamespacedName, audience string) (string, time.Time, *failure) {
	key := saKey{sa, audience}
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	if err := r.Get(ctx, sa, m); err != nil {
		if apierrors.IsNotFound(err) {
			r.saTokens.drop(key)
			return "", time.Time{}, &failure{Reason: authv1alpha1.ReasonServiceAccountNotFound, Err: err, Message: fmt.Sprintf(
				"ServiceAccount %q does not exist in namespace %s: the client authenticates as system:serviceaccount:%s:%s; create it", sa.Name, sa.Namespace, sa.Namespace, sa.Name)}
		}
		return "", time.Time{}, asFailure(err)
	}
	unlock, err := r.saTokens.lock(ctx, key)
	if err != nil {
		return "", time.Time{}, asFailure(err) // the reconcile's time is up while another caller requests
	}
	defer unlock()
	now := r.now()
	if t, ok := r.saTokens.get(key); ok && t.uid == m.UID && now.Before(t.issued.Add(time.Duration(reuseFraction*float64(t.expires.Sub(t.issued))))) {
		return t.token, t.expires, nil
	}
	life := int64(r.ServiceAccountTokenLifetime / time.Second)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &life}}
	if err := r.SubResource("token").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sa.Namespace, Name: sa.Name}}, tr); err != nil {
		metrics.ServiceAccountTokenRequest("error")
		switch {
		case apierrors.IsNotFound(err):
			r.saTokens.drop(key)
			return "", time.Time{}, &failure{Reason: authv1alpha1.ReasonServiceAccountNotFound, Err: err, Message: fmt.Sprintf("ServiceAccount %q does not exist in namespace %s", sa.Name, sa.Namespace)}
		case apierrors.IsForbidden(err):
			return "", time.Time{}, &failure{Reason: authv1alpha1.ReasonServiceAccountTokenForbidden, Err: err, Message: fmt.Sprintf(
				"the operator may not request tokens of ServiceAccount %s/%s (RBAC: create on serviceaccounts/token): %s", sa.Namespace, sa.Name, errMessage(err))}
		}
		return "", time.Time{}, asFailure(err)
	}
	metrics.ServiceAccountTokenRequest("success")
	exp := tr.Status.ExpirationTimestamp.Time
	if max := now.Add(r.ServiceAccountTokenLifetime); exp.IsZero() || exp.After(max) {
		exp = max // the answer's own expiry, but never later than what was asked for
	}
	r.saTokens.put(key, saToken{token: tr.Status.Token, uid: m.UID, issued: now, expires: exp})
	return tr.Status.Token, exp, nil
}

// lock takes k's lock, or gives up when ctx ends first, and returns its unlock.
func (c *saTokens) lock(ctx context.Context, k saKey) (func(), error) {
	c.mu.Lock()
	if c.locks == nil {
		c.locks = map[saKey]chan struct{}{}
	}
	l, ok := c.locks[k]
	if !ok {
		l = make(chan struct{}, 1)
		c.locks[k] = l
	}
	c.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *saTokens) get(k saKey) (saToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[k]
	return t, ok
}

func (c *saTokens) put(k saKey, t saToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[saKey]saToken{}
	}
	c.m[k] = t
}

func (c *saTokens) drop(k saKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
	delete(c.locks, k) // a holder keeps its own channel; the next caller makes a new one
}
