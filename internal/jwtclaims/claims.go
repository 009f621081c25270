// Package jwtclaims reads the non-secret claims of a JWT (access, refresh or offline token)
// without verifying it: for display and bookkeeping, never for an authorization decision. It has
// no dependencies beyond the standard library, so clients such as the kubectl plugin can use it
// without linking the Keycloak client.
package jwtclaims

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Claims are the non-secret facts of an access token that help a person debug a 401.
// They are read without verifying the signature: they are for display and bookkeeping,
// never for an authorization decision.
type Claims struct {
	ID                string
	Issuer            string
	Subject           string
	PreferredUsername string
	AuthorizedParty   string
	Audience          []string
	Scope             string
	Groups            []string
	SessionID         string
	// Type is the `typ` claim: "Bearer" for access tokens, "Refresh" or "Offline" for refresh tokens.
	Type      string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// Email is the `email` claim: the first user name field of mlflow-oidc-auth (its default
	// OIDC_USERNAME_FIELD is email,preferred_username).
	Email string
}

// maxTokenBytes bounds the size of a token we are willing to decode.
const maxTokenBytes = 64 << 10

// Parse decodes the payload of a JWT. A token that is not a JWT gives an error.
func Parse(token string) (*Claims, error) {
	if len(token) > maxTokenBytes {
		return nil, errors.New("token is larger than 64 KiB")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("token is not a JWT (expected three dot-separated parts)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, errors.New("token payload is not base64url")
	}
	var raw struct {
		JTI               string          `json:"jti"`
		Iss               string          `json:"iss"`
		Sub               string          `json:"sub"`
		PreferredUsername string          `json:"preferred_username"`
		Azp               string          `json:"azp"`
		Aud               json.RawMessage `json:"aud"`
		Scope             string          `json:"scope"`
		Groups            []string        `json:"groups"`
		Sid               string          `json:"sid"`
		Typ               string          `json:"typ"`
		Iat               json.Number     `json:"iat"`
		Exp               json.Number     `json:"exp"`
		Email             string          `json:"email"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, errors.New("token payload is not a JSON object of the expected shape")
	}
	c := &Claims{
		ID: raw.JTI, Issuer: raw.Iss, Subject: raw.Sub, PreferredUsername: raw.PreferredUsername,
		AuthorizedParty: raw.Azp, Scope: raw.Scope, Groups: raw.Groups, SessionID: raw.Sid, Type: raw.Typ,
		IssuedAt: unixTime(raw.Iat), ExpiresAt: unixTime(raw.Exp), Email: raw.Email,
	}
	if len(raw.Aud) > 0 {
		var one string
		if json.Unmarshal(raw.Aud, &one) == nil {
			if one != "" {
				c.Audience = []string{one}
			}
		} else if err := json.Unmarshal(raw.Aud, &c.Audience); err != nil {
			return nil, errors.New("token aud claim is neither a string nor a list of strings")
		}
	}
	return c, nil
}

// unixTime reads a NumericDate; anything unusable (absent, fractional garbage, out of range)
// gives the zero time.
func unixTime(n json.Number) time.Time {
	if n == "" {
		return time.Time{}
	}
	f, err := n.Float64()
	if err != nil || f <= 0 || f > 1e11 {
		return time.Time{}
	}
	return time.Unix(int64(f), 0).UTC()
}
