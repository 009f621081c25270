package controllers

import (
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
)

// failure is why no token could be obtained, written or revoked, classified for a person: a
// condition reason and a message. It keeps the error it came from (errors.Is/As see through it).
// A failure without a reason is not the user's problem (the API server is unavailable, a write
// lost a race): it is returned as an error and retried by the work queue, and nothing is recorded.
type failure struct {
	Reason  string
	Message string
	Err     error
}

func (f *failure) Error() string {
	if f.Reason == "" {
		return f.Message
	}
	return f.Reason + ": " + f.Message
}

func (f *failure) Unwrap() error { return f.Err }

// classified reports whether a person can act on f (it has a condition reason).
func (f *failure) classified() bool { return f.Reason != "" }

// kind says, where the failure happens, whether it can pass on its own.
func (f *failure) kind() authv1alpha1.FailureKind {
	if stalledReasons[f.Reason] {
		return authv1alpha1.FailureNeedsChange
	}
	return authv1alpha1.FailureTransient
}

// asFailure returns err as a failure: a failure stays what it is; anything else (an API error,
// a conflict, throttling) is unclassified.
func asFailure(err error) *failure {
	var f *failure
	if errors.As(err, &f) {
		return f
	}
	return &failure{Message: err.Error(), Err: err}
}

// keycloakReasons maps Keycloak's failure reasons onto condition reasons. An invalid_grant means
// different things per grant, so the callers map it themselves (see keycloakFailure).
var keycloakReasons = map[keycloak.Reason]string{
	keycloak.ReasonInvalidClientCredentials: authv1alpha1.ReasonInvalidClientCredentials,
	keycloak.ReasonUnauthorizedClient:       authv1alpha1.ReasonUnauthorizedClient,
	keycloak.ReasonInvalidScope:             authv1alpha1.ReasonInvalidScope,
	keycloak.ReasonRealmNotFound:            authv1alpha1.ReasonRealmNotFound,
	keycloak.ReasonUnreachable:              authv1alpha1.ReasonKeycloakUnreachable,
	keycloak.ReasonTimeout:                  authv1alpha1.ReasonKeycloakTimeout,
	keycloak.ReasonTLS:                      authv1alpha1.ReasonKeycloakTLSError,
	keycloak.ReasonServerError:              authv1alpha1.ReasonKeycloakError,
	keycloak.ReasonInvalidResponse:          authv1alpha1.ReasonInvalidTokenResponse,
	keycloak.ReasonUnsupportedGrant:         authv1alpha1.ReasonUnsupportedGrant,
	keycloak.ReasonInvalidGrant:             authv1alpha1.ReasonRefreshTokenInvalid,
}

// keycloakFailure classifies an error of the Keycloak client; what prefixes the message.
func keycloakFailure(err error, what string) *failure {
	reason, ok := keycloakReasons[keycloak.ReasonOf(err)]
	if !ok {
		reason = authv1alpha1.ReasonKeycloakError
	}
	msg := err.Error()
	if what != "" {
		msg = what + ": " + msg
	}
	return &failure{Reason: reason, Message: msg, Err: err}
}

// secretWriteFailure classifies an error writing one of the operator's Secrets: a refusal that
// repeats on every attempt (invalid, forbidden) is the user's to fix and gets a reason; anything
// else (the API server down, a conflict) is retried unclassified.
func secretWriteFailure(err error, name string) *failure {
	switch {
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return &failure{Reason: authv1alpha1.ReasonSecretRejected, Err: err,
			Message: fmt.Sprintf("the API server refused Secret %q: %s", name, errMessage(err))}
	case apierrors.IsForbidden(err):
		return &failure{Reason: authv1alpha1.ReasonSecretForbidden, Err: err,
			Message: fmt.Sprintf("the operator may not write Secret %q: %s", name, errMessage(err))}
	}
	return asFailure(err)
}

// stalledReasons are failures that only a change can fix (of the resource, a Secret it names, or
// the client in Keycloak): the resource reads Stalled, kstatus Failed. Every other reason (Keycloak
// down or slow, a 5xx, a garbled answer) can pass on its own.
var stalledReasons = map[string]bool{
	authv1alpha1.ReasonClientSecretNotFound:         true,
	authv1alpha1.ReasonInvalidClientSecret:          true,
	authv1alpha1.ReasonInvalidClientCredentials:     true,
	authv1alpha1.ReasonUnauthorizedClient:           true,
	authv1alpha1.ReasonInvalidScope:                 true,
	authv1alpha1.ReasonRealmNotFound:                true,
	authv1alpha1.ReasonKeycloakTLSError:             true,
	authv1alpha1.ReasonCABundleNotFound:             true,
	authv1alpha1.ReasonInvalidCABundle:              true,
	authv1alpha1.ReasonUnsupportedGrant:             true,
	authv1alpha1.ReasonRefreshTokenNotFound:         true,
	authv1alpha1.ReasonRefreshTokenInvalid:          true,
	authv1alpha1.ReasonForeignRefreshToken:          true,
	authv1alpha1.ReasonUserCredentialsNotFound:      true,
	authv1alpha1.ReasonInvalidUserCredentials:       true,
	authv1alpha1.ReasonSecretConflict:               true,
	authv1alpha1.ReasonSecretContested:              true,
	authv1alpha1.ReasonInvalidSecretTemplate:        true,
	authv1alpha1.ReasonSecretRejected:               true,
	authv1alpha1.ReasonSecretForbidden:              true,
	authv1alpha1.ReasonIssuerNotFound:               true,
	authv1alpha1.ReasonIssuerNotAllowed:             true,
	authv1alpha1.ReasonInsecureURL:                  true,
	authv1alpha1.ReasonHostNotAllowed:               true,
	authv1alpha1.ReasonURLNotAllowed:                true,
	authv1alpha1.ReasonServiceAccountNotFound:       true,
	authv1alpha1.ReasonServiceAccountTokenForbidden: true,
}

func errMessage(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return st.Status().Message
	}
	return err.Error()
}
