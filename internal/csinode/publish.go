package csinode

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
)

// publish serves NodePublishVolume: a new volume gets its first token; a known one (republish)
// takes the pod's fresh service-account token and keeps its access token while it is valid.
func (d *Driver) publish(ctx context.Context, id, targetPath string, volCtx, secrets map[string]string) error {
	spec, pod, err := parseVolume(volCtx)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	tokens, err := podTokens(secrets, volCtx)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	d.mu.Lock()
	v, known := d.vols[id]
	if !known {
		v = &volume{}
		d.vols[id] = v
	}
	d.mu.Unlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	if known && v.rec.VolumeID != "" {
		return d.republish(ctx, v, tokens)
	}
	start := d.clock.Now()
	rec, answered, err := d.issue(ctx, record{VolumeID: id, TargetPath: targetPath, Pod: pod, Spec: spec}, tokens)
	if err == nil {
		err = d.deliver(v, rec, answered)
	}
	if err != nil {
		d.mu.Lock()
		delete(d.vols, id)
		d.mu.Unlock()
		metrics.CSIFailure(spec.Issuer(), pod.Namespace, "mount", failureReason(err))
		d.log.Info("Mount refused", "pod", pod.Namespace+"/"+pod.Name, "volume", id, "issuer", spec.Issuer(), "reason", err.Error())
		return err
	}
	// A call that waited on v.mu behind a failed one finds v removed from the map: put it back.
	d.mu.Lock()
	d.vols[id] = v
	d.mu.Unlock()
	metrics.CSIIssuance(spec.Issuer(), pod.Namespace, "mount")
	took := d.clock.Since(start)
	metrics.CSIPublished(spec.Issuer(), pod.Namespace, took)
	d.log.Info("Published a token", "pod", pod.Namespace+"/"+pod.Name, "volume", id, "issuer", spec.Issuer(), "client", rec.ClientID, "subject", pod.Subject(), "took", took.String(),
		"token", fingerprint(rec.AccessToken), "answeredAt", answered.UTC().Format(time.RFC3339Nano), "expires", rec.ExpiresAt, "renewAt", v.next)
	go d.observe() // it takes every volume's lock, maybe the one held here
	return nil
}

// republish takes the pod's fresh service-account token. The access token stays while it is
// valid (its files are written again if they went missing); an expired one is renewed now.
// Called with v.mu held.
func (d *Driver) republish(ctx context.Context, v *volume, tokens map[string]serviceAccountToken) error {
	if v.rec.Unpublished {
		return status.Errorf(codes.FailedPrecondition, "volume %s is being unpublished", v.rec.VolumeID)
	}
	aud := (&keycloak.Endpoint{URL: v.rec.URL, Realm: v.rec.Realm}).IssuerURL()
	if t, err := assertion(tokens, aud, v.rec.Pod, d.cfg.DriverName); err == nil && t.Expires.After(v.rec.AssertionExpires) {
		v.rec.AssertionToken, v.rec.AssertionExpires = t.Token, t.Expires
		if err := d.state.save(&v.rec); err != nil {
			d.log.Error(err, "Cannot save a volume record", "volume", v.rec.VolumeID)
		}
	}
	if d.clock.Now().Before(v.rec.ExpiresAt) {
		if publishedToken(v.rec.TargetPath) == "" {
			return asInternal(publishFiles(v.rec.TargetPath, files(&v.rec)))
		}
		return nil
	}
	return d.renew(ctx, v, "rotation")
}

// issue resolves the volume's issuer and obtains a token with the pod's service-account token.
// It returns the new record and when Keycloak answered.
func (d *Driver) issue(ctx context.Context, rec record, tokens map[string]serviceAccountToken) (record, time.Time, error) {
	t, err := d.resolve(ctx, rec.Spec, rec.Pod)
	if err != nil {
		return rec, time.Time{}, err
	}
	aud := t.Endpoint.IssuerURL()
	sa, err := assertion(tokens, aud, rec.Pod, d.cfg.DriverName)
	if err != nil {
		return rec, time.Time{}, err
	}
	kctx, cancel := context.WithTimeout(ctx, d.cfg.KeycloakTimeout)
	defer cancel()
	tok, err := d.kc.Token(kctx, t.Endpoint, keycloak.ClientAuth{ClientID: t.ClientID, Assertion: sa.Token},
		keycloak.Grant{Type: keycloak.GrantClientCredentials, Scopes: rec.Spec.Scopes})
	answered := d.clock.Now()
	if err != nil {
		return rec, answered, keycloakError(err, rec.Pod, t.ClientID, t.Endpoint.Realm)
	}
	rec.URL, rec.Realm, rec.CABundle, rec.ClientID, rec.TrackingURI = t.Endpoint.URL, t.Endpoint.Realm, t.Endpoint.CABundle, t.ClientID, t.TrackingURI
	rec.AccessToken, rec.IssuedAt, rec.ExpiresAt = tok.AccessToken, answered, answered.Add(tok.ExpiresIn)
	if c, err := jwtclaims.Parse(tok.AccessToken); err == nil && !c.ExpiresAt.IsZero() && c.ExpiresAt.Before(rec.ExpiresAt) {
		rec.ExpiresAt = c.ExpiresAt // the token's own exp wins over expires_in counted from our clock
	}
	rec.AssertionToken, rec.AssertionExpires = sa.Token, sa.Expires
	return rec, answered, nil
}

// deliver swaps the volume's files to rec's token, then saves the record and schedules the next
// rotation. The swap comes first: the pod has the token as soon as Keycloak answered. Called with
// v.mu held.
func (d *Driver) deliver(v *volume, rec record, answered time.Time) error {
	if err := publishFiles(rec.TargetPath, files(&rec)); err != nil {
		return asInternal(err)
	}
	metrics.CSIDelivered(rec.Spec.Issuer(), rec.Pod.Namespace, d.clock.Since(answered))
	v.rec = rec
	v.failures = 0
	if err := d.state.save(&v.rec); err != nil {
		// The pod has its token; only a restart would lose track of it (and not revoke it).
		d.log.Error(err, "Cannot save a volume record", "volume", rec.VolumeID)
	}
	d.schedule(v, d.renewAt(&v.rec))
	return nil
}

// files are what a volume holds for rec.
func files(rec *record) map[string][]byte {
	f := map[string][]byte{
		FileToken:     []byte(rec.AccessToken),
		FileExpiresAt: []byte(rec.ExpiresAt.UTC().Format(time.RFC3339)),
	}
	if rec.TrackingURI != "" {
		f[FileTrackingURI] = []byte(rec.TrackingURI)
	}
	return f
}

// assertion picks the pod's service-account token for the realm's audience and checks that it is
// the pod's own (its subject), and still valid.
func assertion(tokens map[string]serviceAccountToken, audience string, pod Pod, driver string) (serviceAccountToken, error) {
	t, ok := tokens[audience]
	if !ok || t.Token == "" {
		return t, status.Errorf(codes.FailedPrecondition,
			"the kubelet passed no service-account token for the audience %s (the realm's issuer URL, which Keycloak requires; it passed: %s): add it to the CSIDriver %s's tokenRequests (Helm value csiDriver.tokenAudiences)",
			audience, audiences(tokens), driver)
	}
	c, err := jwtclaims.Parse(t.Token)
	if err != nil {
		return t, status.Errorf(codes.InvalidArgument, "the pod's service-account token for %s: %v", audience, err)
	}
	if c.Subject != pod.Subject() {
		return t, status.Errorf(codes.PermissionDenied, "the service-account token passed for pod %s/%s is not its own (subject %q, want %q)", pod.Namespace, pod.Name, c.Subject, pod.Subject())
	}
	if t.Expires.IsZero() {
		t.Expires = c.ExpiresAt
	}
	return t, nil
}

// keycloakError turns Keycloak's refusal into a gRPC status that names the cause.
func keycloakError(err error, pod Pod, clientID, realm string) error {
	switch keycloak.ReasonOf(err) {
	case keycloak.ReasonInvalidClientCredentials:
		return status.Errorf(codes.PermissionDenied,
			"Keycloak refused %s as client %q of realm %s: no client is bound to this ServiceAccount (authenticator \"Signed JWT - Federated\", subject %s), or clientID %q is not the bound client (%v)",
			pod.Subject(), clientID, realm, pod.Subject(), clientID, err)
	case keycloak.ReasonUnreachable, keycloak.ReasonTimeout, keycloak.ReasonServerError:
		return status.Errorf(codes.Unavailable, "%s: %v", keycloak.ReasonOf(err), err)
	}
	return status.Errorf(codes.FailedPrecondition, "%s: %v", keycloak.ReasonOf(err), err)
}

func asInternal(err error) error {
	if err == nil {
		return nil
	}
	return status.Errorf(codes.Internal, "writing the volume's files: %v", err)
}

// failureReason is the reason label of a failure: its gRPC code (PermissionDenied: a refusal
// by the scope rules or by Keycloak; Unavailable: Keycloak or the API server did not answer).
func failureReason(err error) string { return status.Code(err).String() }

// transient reports whether a failure can pass on its own (Keycloak down or slow).
func transient(err error) bool {
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.DeadlineExceeded
}
