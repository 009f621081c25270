package controllers

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/renewal"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// failure is a classified reason why no token could be obtained or written.
type failure struct {
	Reason  string
	Message string
}

func (f *failure) Error() string { return f.Reason + ": " + f.Message }

func (r *MLflowAccessTokenReconciler) reconcileNormal(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	now := r.now()
	name := obj.SecretNameOrDefault()
	inputs := inputsHash(obj)

	secret, err := r.ownedSecret(ctx, obj, name, r.Client)
	if err != nil {
		return r.fail(ctx, obj, nil, asFailure(err))
	}
	cur, have := tokensecret.Read(secret)

	d := renewal.Decide(decideInput(obj, now, cur, have, inputs))
	if !d.Issue {
		// Bring labels, annotations and the tracking URI up to date without a new token.
		if have && cur.IssuedFor == inputs {
			if err := r.writeSecret(ctx, obj, secret, name, cur); err != nil {
				return r.fail(ctx, obj, &cur, asFailure(err))
			}
			r.markValid(obj, cur)
		}
		return ctrl.Result{RequeueAfter: d.RequeueAfter}, nil
	}

	// Before spending a token, look at the Secret as the API server has it: the cache may not
	// yet show a token the previous leader (or an earlier process) just wrote. When the cache
	// shows the very version this process wrote last, it is not behind: no read needed.
	fresh := secret
	if !r.written.isLatest(secret) {
		if fresh, err = r.ownedSecret(ctx, obj, name, r.APIReader); err != nil {
			return r.fail(ctx, obj, nil, asFailure(err))
		}
	}
	if st, ok := tokensecret.Read(fresh); ok && fresh != secret {
		if d2 := renewal.Decide(decideInput(obj, now, st, ok, inputs)); !d2.Issue {
			r.markValid(obj, st)
			return ctrl.Result{RequeueAfter: d2.RequeueAfter}, nil
		}
		cur, have, secret = st, ok, fresh
	}

	logger.V(1).Info("Obtaining a token", "why", d.Why, "secret", name)
	if pendingRequest(obj, authv1alpha1.AnnotationRevokeRequest, obj.Status.LastRevocationRequest) {
		// A leaked token: revoke the one in the Secret first, then replace it.
		if have {
			if ferr := r.revokeAccessToken(ctx, obj, cur.AccessToken); ferr != nil {
				return r.fail(ctx, obj, validOrNil(have, cur, now), ferr)
			}
			r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, "Revoked", "Revoke", "Revoked the token in Secret %s on request; issuing a new one", name)
		}
		obj.Status.LastRevocationRequest = obj.Annotations[authv1alpha1.AnnotationRevokeRequest]
	}
	tok, chain, issuedAt, ferr := r.obtain(ctx, obj)
	if ferr != nil {
		return r.fail(ctx, obj, validOrNil(have, cur, now), ferr)
	}

	st := r.schedule(obj, tok, issuedAt, inputs)
	if err := r.writeSecret(ctx, obj, secret, name, st); err != nil {
		return r.fail(ctx, obj, validOrNil(have, cur, now), asFailure(err))
	}
	if old := obj.Status.SecretName; old != "" && old != name {
		r.deleteOwnedSecret(ctx, obj, old)
	}

	if obj.Spec.Grant.Type == authv1alpha1.GrantClientCredentials {
		r.keepClientSession(ctx, obj, tok)
	}
	r.markChain(obj, chain, tok)

	if pendingRequest(obj, authv1alpha1.AnnotationRenewRequest, obj.Status.LastRenewalRequest) {
		obj.Status.LastRenewalRequest = obj.Annotations[authv1alpha1.AnnotationRenewRequest]
	}
	first := obj.Status.Rotations == 0
	obj.Status.Rotations++
	obj.Status.FailedAttempts = 0
	obj.Status.LastFailureTime = nil
	r.markValid(obj, st)

	claims := obj.Status.Token
	who := ""
	if claims != nil {
		who = firstNonEmpty(claims.PreferredUsername, claims.Subject)
	}
	switch {
	case d.Why == renewal.Due && !first:
		// A routine rotation: the same event every time, so that the events library folds the
		// repeats into one series ("x42 over 2h") instead of writing an Event per rotation. The
		// reference carries no resourceVersion (that changes at every rotation, and the library
		// keys series by the reference). Times are in status and the Ready condition.
		r.Recorder.Eventf(seriesRef(obj), nil, corev1.EventTypeNormal, "Renewed", "Renew",
			"Renewed the token for %q in Secret %s on schedule", who, name)
	default:
		reason, verb := "Renewed", "Renewed"
		if first {
			reason, verb = "Issued", "Issued"
		}
		if d.Why == renewal.Requested {
			verb += " on request"
		}
		r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, reason, "Issue",
			"%s token for %q in Secret %s, expires %s, next renewal %s (%s)", verb, who, name,
			st.ExpiresAt.Format(time.RFC3339), st.RenewAt.Format(time.RFC3339), d.Why)
	}
	logger.Info("Token written", "secret", name, "why", d.Why, "expiresAt", st.ExpiresAt, "renewAt", st.RenewAt, "rotations", obj.Status.Rotations)
	// A token that is already due when written (a short one, cut off by the end of its session)
	// still needs a next reconcile: a RequeueAfter ≤ 0 would mean none at all.
	return ctrl.Result{RequeueAfter: max(st.RenewAt.Sub(r.now()), minRequeue)}, nil
}

// minRequeue is the shortest wait before the next renewal of a token written just now.
const minRequeue = time.Second

// seriesRef is a reference to obj without resourceVersion, for events that repeat.
func seriesRef(obj *authv1alpha1.MLflowAccessToken) *corev1.ObjectReference {
	return &corev1.ObjectReference{
		APIVersion: authv1alpha1.GroupVersion.String(),
		Kind:       "MLflowAccessToken",
		Namespace:  obj.Namespace,
		Name:       obj.Name,
		UID:        obj.UID,
	}
}

func decideInput(obj *authv1alpha1.MLflowAccessToken, now time.Time, cur tokensecret.State, have bool, inputs string) renewal.Input {
	in := renewal.Input{
		Now:         now,
		HaveToken:   have,
		InputsMatch: cur.IssuedFor == inputs,
		RenewAt:     cur.RenewAt,
		SpecChanged: obj.Generation != obj.Status.ObservedGeneration,
		Requested:   pendingRequest(obj, authv1alpha1.AnnotationRenewRequest, obj.Status.LastRenewalRequest) || pendingRequest(obj, authv1alpha1.AnnotationRevokeRequest, obj.Status.LastRevocationRequest),
	}
	if obj.Status.FailedAttempts > 0 && obj.Status.RenewalTime != nil {
		t := obj.Status.RenewalTime.Time
		in.RetryAt = &t
	}
	return in
}

// obtain reads the client's credentials and asks Keycloak for a token. For the refresh-based
// grants it also returns the refresh chain, already persisted in the state Secret.
func (r *MLflowAccessTokenReconciler) obtain(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (*keycloak.Token, *tokensecret.Chain, time.Time, *failure) {
	ep, creds, ferr := r.keycloakAccess(ctx, obj)
	if ferr != nil {
		return nil, nil, time.Time{}, ferr
	}
	// The lifetime is counted from before the request: the token cannot expire later than
	// sent-time + expires_in by our clock.
	issuedAt := r.now()
	switch obj.Spec.Grant.Type {
	case authv1alpha1.GrantClientCredentials:
		kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
		defer cancel()
		tok, err := r.Keycloak.ClientCredentials(kctx, ep, creds, obj.Spec.Grant.Scopes)
		if err != nil {
			return nil, nil, time.Time{}, &failure{Reason: string(keycloak.ReasonOf(err)), Message: err.Error()}
		}
		return tok, nil, issuedAt, nil
	case authv1alpha1.GrantRefreshToken, authv1alpha1.GrantPassword:
		tok, chain, ferr := r.obtainByRefresh(ctx, obj, creds, ep)
		return tok, chain, issuedAt, ferr
	default:
		return nil, nil, time.Time{}, &failure{Reason: authv1alpha1.ReasonUnsupportedGrant, Message: fmt.Sprintf("grant type %q is not supported by this operator version", obj.Spec.Grant.Type)}
	}
}

// keycloakAccess returns where and as whom to talk to Keycloak: the endpoint (with the CA
// bundle, if any) and the client's credentials. Secrets and ConfigMaps are read through the
// uncached reader: the cache holds only the operator's own Secrets, and a user's credentials
// should not sit in memory longer than needed.
func (r *MLflowAccessTokenReconciler) keycloakAccess(ctx context.Context, obj *authv1alpha1.MLflowAccessToken) (keycloak.Endpoint, keycloak.Credentials, *failure) {
	k := obj.Spec.Keycloak
	ep := keycloak.Endpoint{URL: k.URL, Realm: k.Realm}
	ca, ferr := r.caBundle(ctx, obj)
	if ferr != nil {
		return ep, keycloak.Credentials{}, ferr
	}
	ep.CABundle = ca
	secret, ferr := r.secretValue(ctx, obj, k.ClientSecretRef.Name, firstNonEmpty(k.ClientSecretRef.Key, "client-secret"),
		authv1alpha1.ReasonClientSecretNotFound, "keycloak.clientSecretRef")
	if ferr != nil {
		return ep, keycloak.Credentials{}, ferr
	}
	return ep, keycloak.Credentials{ClientID: k.ClientID, ClientSecret: string(secret)}, nil
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
		key := firstNonEmpty(ref.Key, "ca.crt")
		cm := &corev1.ConfigMap{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: ref.Name}, cm); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, &failure{Reason: authv1alpha1.ReasonCABundleNotFound, Message: fmt.Sprintf("ConfigMap %q (keycloak.caConfigMapRef) does not exist in namespace %s", ref.Name, obj.Namespace)}
			}
			return nil, asFailure(err)
		}
		v, ok := cm.Data[key]
		if !ok {
			return nil, &failure{Reason: authv1alpha1.ReasonCABundleNotFound, Message: fmt.Sprintf("ConfigMap %q has no key %q (keycloak.caConfigMapRef.key)", ref.Name, key)}
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

// schedule turns a token response into the state recorded in the Secret. The renewal time,
// with its jitter, is computed here once and stored.
func (r *MLflowAccessTokenReconciler) schedule(obj *authv1alpha1.MLflowAccessToken, tok *keycloak.Token, issuedAt time.Time, inputs string) tokensecret.State {
	expiresAt := issuedAt.Add(tok.ExpiresIn)
	// Keycloak's own exp claim is usually the same second; when it is earlier (clock skew),
	// trust the earlier one.
	if c, err := jwtclaims.Parse(tok.AccessToken); err == nil && !c.ExpiresAt.IsZero() && c.ExpiresAt.Before(expiresAt) && c.ExpiresAt.After(issuedAt) {
		expiresAt = c.ExpiresAt
	}
	expiresAt = expiresAt.Truncate(time.Second)
	var rb *time.Duration
	if obj.Spec.RenewBefore != nil {
		d := obj.Spec.RenewBefore.Duration
		rb = &d
	}
	sched := renewal.RenewalTime(issuedAt, expiresAt, rb, r.rand())
	return tokensecret.State{
		AccessToken: tok.AccessToken,
		IssuedAt:    issuedAt.Truncate(time.Second),
		ExpiresAt:   expiresAt,
		RenewAt:     sched.RenewAt,
		IssuedFor:   inputs,
	}
}

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
		return nil, conflict(obj, name)
	}
	return s, nil
}

func conflict(obj *authv1alpha1.MLflowAccessToken, name string) *failure {
	return &failure{Reason: authv1alpha1.ReasonSecretConflict,
		Message: fmt.Sprintf("Secret %q exists and is not owned by this MLflowAccessToken; delete it or choose another spec.secretName", name)}
}

// writeSecret creates the Secret or updates it in place. It never deletes and re-creates it:
// a mounted volume follows updates of the Secret it was created from, not a new one.
func (r *MLflowAccessTokenReconciler) writeSecret(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, existing *corev1.Secret, name string, st tokensecret.State) error {
	if existing == nil {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: obj.Namespace}}
		tokensecret.Apply(s, obj, st)
		if err := controllerutil.SetControllerReference(obj, s, r.Scheme()); err != nil {
			return err
		}
		r.written.expect(s)
		err := r.Create(ctx, s)
		if err == nil {
			r.written.record(s)
			return nil
		}
		if apierrors.IsAlreadyExists(err) {
			// The cache cannot see Secrets without our label: look it up directly.
			found, gerr := r.ownedSecret(ctx, obj, name, r.APIReader)
			if gerr != nil {
				return gerr
			}
			if found == nil {
				return err
			}
			existing = found // ours, but its label was removed: adopt it below.
		} else {
			return err
		}
	}
	s := existing.DeepCopy()
	if !tokensecret.Apply(s, obj, st) {
		return nil
	}
	r.written.expect(s)
	if err := r.Update(ctx, s); err != nil {
		return err
	}
	r.written.record(s)
	return nil
}

// deleteOwnedSecret removes a Secret this resource wrote before spec.secretName changed.
func (r *MLflowAccessTokenReconciler) deleteOwnedSecret(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, name string) {
	s, err := r.ownedSecret(ctx, obj, name, r.APIReader)
	if err != nil || s == nil {
		return
	}
	if err := r.Delete(ctx, s, client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) {
		log.FromContext(ctx).Info("Could not delete the previous Secret", "secret", name, "error", err.Error())
	}
	r.written.forget(s)
}

// markValid records a good token in status.
func (r *MLflowAccessTokenReconciler) markValid(obj *authv1alpha1.MLflowAccessToken, st tokensecret.State) {
	s := &obj.Status
	s.SecretName = obj.SecretNameOrDefault()
	s.IssuedAt = timePtr(st.IssuedAt)
	s.ExpiresAt = timePtr(st.ExpiresAt)
	s.RenewalTime = timePtr(st.RenewAt)
	s.Token = claimsOf(st.AccessToken)
	if s.FailedAttempts == 0 {
		setCondition(obj, authv1alpha1.ConditionReady, true, authv1alpha1.ReasonTokenValid,
			fmt.Sprintf("Token in Secret %s is valid until %s; renewal at %s", s.SecretName,
				st.ExpiresAt.UTC().Format(time.RFC3339), st.RenewAt.UTC().Format(time.RFC3339)))
		setCondition(obj, authv1alpha1.ConditionRenewalFailing, false, authv1alpha1.ReasonRenewalSucceeded, "The last attempt to obtain a token succeeded")
	}
}

// fail records a failed attempt: conditions, an event, the failure count and the next retry
// time (exponential backoff with jitter, stored so that it survives a restart). It returns nil
// error and its own requeue so that failures do not flood the error log. A Secret holding a
// valid token is left as it is.
func (r *MLflowAccessTokenReconciler) fail(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, valid *tokensecret.State, f *failure) (ctrl.Result, error) {
	if f.Reason == "" {
		// Not classified: an API server error. Let controller-runtime retry with its rate limiter.
		return ctrl.Result{}, f
	}
	now := r.now()
	s := &obj.Status
	s.FailedAttempts++
	s.LastFailureTime = timePtr(now.Truncate(time.Second))

	var exp *time.Time
	if valid != nil {
		exp = &valid.ExpiresAt
	}
	delay := r.Backoff.Delay(s.FailedAttempts, now, exp, r.rand())
	retryAt := now.Add(delay).Truncate(time.Second)
	s.RenewalTime = timePtr(retryAt)

	setCondition(obj, authv1alpha1.ConditionRenewalFailing, true, f.Reason,
		fmt.Sprintf("%s (attempt %d; next attempt at %s)", f.Message, s.FailedAttempts, retryAt.UTC().Format(time.RFC3339)))
	if valid != nil {
		setCondition(obj, authv1alpha1.ConditionReady, true, authv1alpha1.ReasonRenewalFailing,
			fmt.Sprintf("Renewal failing (%s) but the token in Secret %s is valid until %s", f.Reason, obj.Status.SecretName,
				valid.ExpiresAt.UTC().Format(time.RFC3339)))
	} else {
		msg := f.Message
		if s.ExpiresAt != nil && !now.Before(s.ExpiresAt.Time) {
			msg = fmt.Sprintf("the token expired at %s and no new one could be obtained: %s", s.ExpiresAt.UTC().Format(time.RFC3339), f.Message)
		}
		setCondition(obj, authv1alpha1.ConditionReady, false, f.Reason, msg)
	}
	r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, f.Reason, "Issue", "Renewal failed: %s", f.Message)
	log.FromContext(ctx).Info("Could not obtain a token", "reason", f.Reason, "message", f.Message,
		"failedAttempts", s.FailedAttempts, "retryIn", delay.String())
	return ctrl.Result{RequeueAfter: retryAt.Sub(now)}, nil
}

// asFailure classifies errors that come from the API server or our own code.
func asFailure(err error) *failure {
	if f, ok := err.(*failure); ok {
		return f
	}
	// An API error (conflict, throttling, server down): not the user's problem; retried by
	// controller-runtime's rate limiter, nothing recorded.
	return &failure{Message: err.Error()}
}

// inputsHash identifies the spec fields that shape the token; a change to any of them makes
// the operator obtain a new token even when the current one is not due.
func inputsHash(obj *authv1alpha1.MLflowAccessToken) string {
	k := obj.Spec.Keycloak
	scopes := slices.Clone(obj.Spec.Grant.Scopes)
	slices.Sort(scopes)
	b, _ := json.Marshal([]any{k.URL, k.Realm, k.ClientID, k.ClientSecretRef.Name, k.ClientSecretRef.Key, obj.Spec.Grant.Type, scopes})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func claimsOf(token string) *authv1alpha1.TokenInfo {
	c, err := jwtclaims.Parse(token)
	if err != nil {
		return nil
	}
	return &authv1alpha1.TokenInfo{
		ID: c.ID, Issuer: c.Issuer, Subject: c.Subject, PreferredUsername: c.PreferredUsername,
		AuthorizedParty: c.AuthorizedParty, Audience: c.Audience, Scope: c.Scope, Groups: c.Groups,
	}
}

func setCondition(obj *authv1alpha1.MLflowAccessToken, typ string, status bool, reason, msg string) {
	st := metav1.ConditionFalse
	if status {
		st = metav1.ConditionTrue
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
		Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: obj.Generation,
	})
}

func timePtr(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t.UTC())
	return &mt
}

func keysOf(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// validOrNil returns the current token state when it is still valid.
func validOrNil(have bool, cur tokensecret.State, now time.Time) *tokensecret.State {
	if have && now.Before(cur.ExpiresAt) {
		return &cur
	}
	return nil
}

// pendingRequest reports whether annotation key holds a request not yet honoured.
func pendingRequest(obj *authv1alpha1.MLflowAccessToken, key, honoured string) bool {
	v := obj.Annotations[key]
	return v != "" && v != honoured
}

// revokeAccessToken revokes one access token at Keycloak.
func (r *MLflowAccessTokenReconciler) revokeAccessToken(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, token string) *failure {
	ep, creds, ferr := r.keycloakAccess(ctx, obj)
	if ferr != nil {
		return ferr
	}
	kctx, cancel := context.WithTimeout(ctx, r.KeycloakTimeout)
	defer cancel()
	if err := r.Keycloak.Revoke(kctx, ep, creds, token, "access_token"); err != nil {
		return &failure{Reason: string(keycloak.ReasonOf(err)), Message: "revoking the current token: " + err.Error()}
	}
	return nil
}
