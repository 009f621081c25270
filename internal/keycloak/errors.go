package keycloak

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/Nerzal/gocloak/v13"
	"github.com/go-resty/resty/v2"
)

// Reason classifies a failure; the controller maps it onto a condition reason.
type Reason string

// Failure reasons.
const (
	ReasonInvalidClientCredentials Reason = "InvalidClientCredentials"
	ReasonUnauthorizedClient       Reason = "UnauthorizedClient"
	ReasonInvalidScope             Reason = "InvalidScope"
	ReasonRealmNotFound            Reason = "RealmNotFound"
	ReasonUnreachable              Reason = "KeycloakUnreachable"
	ReasonTimeout                  Reason = "KeycloakTimeout"
	ReasonTLS                      Reason = "KeycloakTLSError"
	ReasonServerError              Reason = "KeycloakError"
	ReasonInvalidResponse          Reason = "InvalidTokenResponse"
	// ReasonInvalidGrant: Keycloak rejected the grant itself (invalid_grant): a refresh token that
	// expired, was revoked or reused, or a wrong user name or password.
	ReasonInvalidGrant Reason = "InvalidGrant"
	// ReasonUnsupportedGrant: the grant type is not one this client implements.
	ReasonUnsupportedGrant Reason = "UnsupportedGrant"
)

// Error is a classified Keycloak failure. Its message never contains credentials or tokens.
type Error struct {
	Reason Reason
	// StatusCode is the HTTP status, 0 for transport failures.
	StatusCode int
	Message    string
}

func (e *Error) Error() string { return e.Message }

// ReasonOf returns the Reason of a Keycloak error, or ReasonServerError for others.
func ReasonOf(err error) Reason {
	var ke *Error
	if errors.As(err, &ke) {
		return ke.Reason
	}
	return ReasonServerError
}

func classify(ctx context.Context, resp *resty.Response, err error, what string) error {
	if err != nil {
		switch {
		case errors.Is(err, resty.ErrResponseBodyTooLarge):
			return &Error{Reason: ReasonInvalidResponse, Message: what + ": Keycloak's response is larger than the size limit"}
		case resp != nil && resp.RawResponse != nil && resp.StatusCode() >= 200 && resp.StatusCode() < 300:
			// An answer arrived but could not be decoded (truncated or not JSON).
			return &Error{Reason: ReasonInvalidResponse, StatusCode: resp.StatusCode(),
				Message: fmt.Sprintf("%s: Keycloak's answer is not a valid token response (%s)", what, truncate(err.Error(), 120))}
		}
		return transportError(ctx, err, what)
	}
	if resp == nil {
		return &Error{Reason: ReasonServerError, Message: what + ": no response from Keycloak"}
	}
	code := resp.StatusCode()
	if code >= 200 && code < 300 {
		return nil
	}
	var oauthErr, desc string
	if e, ok := resp.Error().(*gocloak.HTTPErrorResponse); ok && e != nil {
		oauthErr = truncate(e.Error, 64)
		desc = truncate(cmp.Or(e.Description, e.Message), 200)
	}
	detail := resp.Status()
	if oauthErr != "" || desc != "" {
		detail = fmt.Sprintf("%d %s", code, strings.TrimSpace(oauthErr+": "+desc))
	}
	switch {
	case code == http.StatusNotFound:
		return &Error{Reason: ReasonRealmNotFound, StatusCode: code,
			Message: fmt.Sprintf("%s: Keycloak answered %s: the realm does not exist or the URL is not Keycloak's base URL", what, detail)}
	case oauthErr == "invalid_grant":
		return &Error{Reason: ReasonInvalidGrant, StatusCode: code,
			Message: fmt.Sprintf("%s: Keycloak rejected the grant (%s)", what, detail)}
	case oauthErr == "invalid_scope":
		return &Error{Reason: ReasonInvalidScope, StatusCode: code,
			Message: fmt.Sprintf("%s: Keycloak rejected the requested scopes (%s)", what, detail)}
	case oauthErr == "invalid_client" || (code == http.StatusUnauthorized && strings.Contains(strings.ToLower(desc), "invalid client")):
		return &Error{Reason: ReasonInvalidClientCredentials, StatusCode: code,
			Message: fmt.Sprintf("%s: Keycloak rejected the client ID or secret (%s)", what, detail)}
	case oauthErr == "unauthorized_client" || code == http.StatusUnauthorized || code == http.StatusForbidden:
		return &Error{Reason: ReasonUnauthorizedClient, StatusCode: code,
			Message: fmt.Sprintf("%s: the client may not use this grant (%s); for client credentials enable \"Service accounts roles\" on the client", what, detail)}
	case code >= 500:
		return &Error{Reason: ReasonServerError, StatusCode: code,
			Message: fmt.Sprintf("%s: Keycloak failed with %s", what, detail)}
	default:
		return &Error{Reason: ReasonServerError, StatusCode: code,
			Message: fmt.Sprintf("%s: unexpected answer from Keycloak: %s", what, detail)}
	}
}

func transportError(ctx context.Context, err error, what string) error {
	var netErr net.Error
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var verifyErr *tls.CertificateVerificationError
	var limited *rateLimitError
	var guarded *guardError
	switch {
	case errors.As(err, &guarded):
		return &Error{Reason: ReasonUnreachable, Message: fmt.Sprintf("%s: not sent: %s", what, guarded.msg)}
	case errors.As(err, &limited):
		return &Error{Reason: ReasonTimeout, Message: fmt.Sprintf("%s: %s", what, limited.Error())}
	case errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalidCert) || errors.As(err, &verifyErr):
		return &Error{Reason: ReasonTLS, Message: fmt.Sprintf("%s: Keycloak's TLS certificate could not be verified (%s); set keycloak.caBundle or keycloak.caConfigMapRef to the CA that issued it", what, describeTransport(err))}
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		return &Error{Reason: ReasonTimeout, Message: fmt.Sprintf("%s: Keycloak did not answer in time", what)}
	case ctx.Err() != nil:
		return &Error{Reason: ReasonTimeout, Message: fmt.Sprintf("%s: cancelled: %v", what, ctx.Err())}
	}
	return &Error{Reason: ReasonUnreachable, Message: fmt.Sprintf("%s: cannot reach Keycloak: %s", what, describeTransport(err))}
}

// describeTransport renders a transport error without the request's form data (Go's url.Error
// carries only method and URL, and our URLs hold no credentials).
func describeTransport(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return truncate(ue.Err.Error(), 300)
	}
	return truncate(err.Error(), 300)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
