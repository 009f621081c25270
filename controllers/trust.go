package controllers

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// The trust boundary (docs/security.md, "What the operator reads and why it believes it").
//
// Everything in a tenant's namespace is input the tenant can write: the consumer Secret, the state
// Secret, their labels, annotations and data. The operator believes such a Secret only when it
// carries the operator's seal (internal/seal: an HMAC over its content and the UID of the resource
// it was written for, with a key tenants cannot read). So:
//   - the schedule comes from the sealed times of a token this resource issued (and the token's
//     own exp claim, when earlier), never from a field a tenant can edit: an edited Secret is
//     re-issued, with a SecretModified event, never left to expire;
//   - only a sealed refresh token is redeemed, and a bootstrap token (which a tenant supplies on
//     purpose) is refused when it belongs to a session another resource holds;
//   - only sealed tokens are revoked, and the kit that revocation falls back on is used only when
//     sealed, and then only through the same guardrails (allowed hosts, plain HTTP) as issuance;
//   - a Secret with the operator's labels that is not sealed for a resource the operator knows
//     (forged, or copied from elsewhere) causes no reconcile and no request, and its content is
//     not even kept in memory (tokensecret.Stub).
//
// Secrets written by operator versions before seals are believed once, when what they hold
// matches what status (which only the operator may write) records; the next write seals them.

// distrust says why a Secret that holds something is not believed: the reason and the wording of
// the Warning event that announces the re-issue. Each case has its own reason, so that the events
// library does not fold one into the other's series.
type distrust struct{ reason, why string }

// consumerToken returns the token the consumer Secret s holds when it is one this resource issued
// and nothing in it was changed: nil otherwise, and then, when s holds something, why it is not
// believed.
func (r *MLflowAccessTokenReconciler) consumerToken(obj *authv1alpha1.MLflowAccessToken, s *corev1.Secret) (*tokensecret.State, *distrust) {
	if s == nil {
		return nil, nil
	}
	st, ok := tokensecret.Read(s)
	switch {
	case tokensecret.Verify(s, r.Seal) && ok:
	case tokensecret.Verify(s, r.Seal):
		return nil, nil
	case ok && !tokensecret.HasSeal(s) && legacyTokenMatches(obj, st):
		// Written before seals, and exactly what status says was issued: believed; sealed at the
		// next write.
	case tokensecret.IsStub(s) || len(s.Data) > 0 || tokensecret.HasSeal(s):
		return nil, &distrust{authv1alpha1.ReasonSecretModified, "was changed by someone other than the operator (or was not written by it for this resource)"}
	default:
		return nil, nil
	}
	if c, err := jwtclaims.Parse(st.AccessToken); err == nil && !c.ExpiresAt.IsZero() && c.ExpiresAt.Before(st.ExpiresAt) {
		st.ExpiresAt = c.ExpiresAt
	}
	if issued := obj.Status.IssuedAt; issued != nil && st.IssuedAt.Before(issued.Time) && !r.written.isOwn(s) {
		return nil, &distrust{authv1alpha1.ReasonSecretRestored, fmt.Sprintf("holds a token issued at %s, older than the one this resource issued last (%s): an older copy was restored",
			stamp(st.IssuedAt), stamp(issued.Time))}
	}
	return &st, nil
}

// legacyTokenMatches: an unsealed token is what status records as issued last (its ID and times).
func legacyTokenMatches(obj *authv1alpha1.MLflowAccessToken, st tokensecret.State) bool {
	s := obj.Status
	c, err := jwtclaims.Parse(st.AccessToken)
	return err == nil && c.ID != "" && s.Token != nil && s.Token.ID == c.ID &&
		s.IssuedAt != nil && s.IssuedAt.Time.Equal(st.IssuedAt) && s.ExpiresAt != nil && s.ExpiresAt.Time.Equal(st.ExpiresAt)
}

// stateContent is what the state Secret holds that the operator believes.
type stateContent struct {
	chain      *tokensecret.Chain
	kit        *tokensecret.Kit
	superseded *tokensecret.Superseded
	// distrusted says why a state Secret's content is ignored ("" when believed or absent).
	distrusted string
}

// readState reads the state Secret s (read from the API server): its chain and kit when sealed
// for this resource. An unsealed one written before seals gives its chain when that continues
// the session status records; its kit is never used (its URL cannot be checked).
func (r *MLflowAccessTokenReconciler) readState(obj *authv1alpha1.MLflowAccessToken, s *corev1.Secret) stateContent {
	switch {
	case s == nil:
		return stateContent{}
	case tokensecret.Verify(s, r.Seal) && metav1.IsControlledBy(s, obj):
		return stateContent{chain: tokensecret.ReadChain(s), kit: tokensecret.ReadKit(s), superseded: tokensecret.ReadSuperseded(s)}
	case !tokensecret.HasSeal(s) && !tokensecret.IsStub(s):
		if c := tokensecret.ReadChain(s); legacyChainMatches(obj, c) {
			return stateContent{chain: c}
		}
		if len(s.Data[tokensecret.KeyRefreshToken]) == 0 && tokensecret.ReadKit(s) == nil {
			return stateContent{} // nothing in it worth a word
		}
	}
	return stateContent{distrusted: fmt.Sprintf("Secret %s was changed by someone other than the operator (or was not written by it for this resource): its refresh token and revocation kit are ignored", s.Name)}
}

// legacyChainMatches: an unsealed chain continues the session status records, for the client
// status records.
func legacyChainMatches(obj *authv1alpha1.MLflowAccessToken, c *tokensecret.Chain) bool {
	if c == nil || c.RefreshToken == "" || obj.Status.SessionID == "" || obj.Status.Token == nil {
		return false
	}
	claims, err := jwtclaims.Parse(c.RefreshToken)
	return err == nil && claims.SessionID == obj.Status.SessionID && claims.AuthorizedParty != "" &&
		claims.AuthorizedParty == obj.Status.Token.AuthorizedParty
}

// IndexSessionID indexes MLflowAccessTokens by status.sessionID, so that a bootstrap token of a
// session another resource holds is recognised.
const IndexSessionID = "status.sessionID"

func indexSessionID(o client.Object) []string {
	if t, ok := o.(*authv1alpha1.MLflowAccessToken); ok && t.Status.SessionID != "" {
		return []string{t.Status.SessionID}
	}
	return nil
}

// checkBootstrap refuses a bootstrap refresh token that cannot be this resource's to redeem: one
// issued to another client, or one of a session another MLflowAccessToken holds (a token leaked
// from another namespace: through the platform's client it would become that namespace's
// identity, and its chain would die). It is never sent to Keycloak then.
func (r *MLflowAccessTokenReconciler) checkBootstrap(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, clientID, token string) *failure {
	c, err := jwtclaims.Parse(token)
	if err != nil {
		return nil // not a JWT: Keycloak judges it (and refuses it)
	}
	ref := obj.Spec.Grant.RefreshTokenSecretRef.Name
	if c.AuthorizedParty != "" && c.AuthorizedParty != clientID {
		return &failure{Reason: authv1alpha1.ReasonForeignRefreshToken, Message: fmt.Sprintf(
			"the refresh token in Secret %q was issued to client %q, not to %q: it was not sent to Keycloak; put a token of client %q there (kubectl mlflow-token bootstrap)",
			ref, c.AuthorizedParty, clientID, clientID)}
	}
	if c.SessionID == "" {
		return nil
	}
	var l authv1alpha1.MLflowAccessTokenList
	if err := r.List(ctx, &l, client.MatchingFields{IndexSessionID: c.SessionID}); err != nil {
		return asFailure(err)
	}
	if slices.ContainsFunc(l.Items, func(o authv1alpha1.MLflowAccessToken) bool { return o.UID != obj.UID }) {
		return &failure{Reason: authv1alpha1.ReasonForeignRefreshToken, Message: fmt.Sprintf(
			"the refresh token in Secret %q belongs to a session another MLflowAccessToken holds: it was not sent to Keycloak; obtain a token of your own (kubectl mlflow-token bootstrap)", ref)}
	}
	return nil
}

// IndexSecretController indexes the operator's Secrets by the name of the MLflowAccessToken that
// controls them, so that a resource that is gone finds its Secrets without a scan of its namespace.
const IndexSecretController = "metadata.controller.mlflowaccesstoken"

func indexSecretController(o client.Object) []string {
	if ref := metav1.GetControllerOfNoCopy(o); ref != nil && ref.Kind == "MLflowAccessToken" && ref.APIVersion == authv1alpha1.GroupVersion.String() {
		return []string{ref.Name}
	}
	return nil
}

// sealedOrOwned passes events of Secrets that are sealed, or whose controller is a live resource
// with that UID (a tenant's edit of a resource's own Secret is mended). Events of unsealed Secrets
// of resources that do not exist (forged, or left without a seal) are dropped: they cost nothing.
type sealedOrOwned struct{ r *MLflowAccessTokenReconciler }

func (p sealedOrOwned) pass(o client.Object) bool {
	s, ok := o.(*corev1.Secret)
	if !ok || tokensecret.Verify(s, p.r.Seal) {
		return true
	}
	ref := metav1.GetControllerOfNoCopy(s)
	if ref == nil {
		return false
	}
	owner := &authv1alpha1.MLflowAccessToken{}
	if err := p.r.Get(context.Background(), client.ObjectKey{Namespace: s.Namespace, Name: ref.Name}, owner); err != nil {
		return false
	}
	return owner.UID == ref.UID
}

func (p sealedOrOwned) Create(e event.CreateEvent) bool   { return p.pass(e.Object) }
func (p sealedOrOwned) Update(e event.UpdateEvent) bool   { return p.pass(e.ObjectNew) }
func (p sealedOrOwned) Delete(e event.DeleteEvent) bool   { return p.pass(e.Object) }
func (p sealedOrOwned) Generic(e event.GenericEvent) bool { return p.pass(e.Object) }

var _ predicate.Predicate = sealedOrOwned{}
