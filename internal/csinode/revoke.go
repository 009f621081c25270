package csinode

import (
	"context"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
)

// unpublish serves NodeUnpublishVolume: the files go at once, then the token is revoked. A
// revocation Keycloak does not answer is retried in the background until the token expires: the
// pod's termination never waits for Keycloak.
func (d *Driver) unpublish(ctx context.Context, id, targetPath string) error {
	v := d.get(id)
	if v == nil {
		// Not ours (any more): a repeated call, or a volume whose publish failed.
		return asInternal(wipeFiles(targetPath))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := wipeFiles(targetPath); err != nil {
		return asInternal(err)
	}
	if v.gone || v.rec.VolumeID == "" {
		return nil
	}
	if !v.rec.Unpublished {
		v.rec.Unpublished = true
		if v.timer != nil {
			v.timer.Stop()
		}
		if err := d.state.save(&v.rec); err != nil {
			d.log.Error(err, "Cannot save a volume record", "volume", id)
		}
	}
	d.revoke(ctx, v)
	return nil
}

// startRevocation marks v unpublished and revokes its token (now, in the background). Called
// with v.mu held.
func (d *Driver) startRevocation(v *volume) {
	v.rec.Unpublished = true
	if err := d.state.save(&v.rec); err != nil {
		d.log.Error(err, "Cannot save a volume record", "volume", v.rec.VolumeID)
	}
	d.schedule(v, d.clock.Now())
}

// revoke revokes v's token at Keycloak, authenticated as the pod's client with the pod's
// service-account token, and forgets the volume; when Keycloak fails and the token is still
// valid, it tries again later. Called with v.mu held.
func (d *Driver) revoke(ctx context.Context, v *volume) {
	rec := &v.rec
	issuer, ns := rec.Spec.Issuer(), rec.Pod.Namespace
	now := d.clock.Now()
	outcome := "revoked"
	switch {
	case !now.Before(rec.ExpiresAt):
		outcome = "expired" // nothing left to cut off
	case !now.Before(rec.AssertionExpires):
		outcome = "expired" // cannot authenticate any more; the token ends at its expiry
		d.log.Info("Cannot revoke: the pod's service-account token has expired", "pod", rec.Pod.Namespace+"/"+rec.Pod.Name, "volume", rec.VolumeID, "tokenExpires", rec.ExpiresAt)
	default:
		kctx, cancel := context.WithTimeout(ctx, d.cfg.KeycloakTimeout)
		err := d.kc.Revoke(kctx, keycloak.Endpoint{URL: rec.URL, Realm: rec.Realm, CABundle: rec.CABundle},
			keycloak.ClientAuth{ClientID: rec.ClientID, Assertion: rec.AssertionToken}, rec.AccessToken, "access_token")
		cancel()
		if err != nil {
			v.failures++
			v.lastFail = now
			retry := d.cfg.Backoff.RetryAt(policy.Failure{At: now, Count: v.failures, Transient: true}, &rec.ExpiresAt, rec.VolumeID)
			d.schedule(v, retry)
			metrics.CSIRevocation(issuer, ns, "failed")
			d.log.Info("Revocation failed; retrying until the token expires", "pod", rec.Pod.Namespace+"/"+rec.Pod.Name, "volume", rec.VolumeID,
				"reason", err.Error(), "retryAt", retry, "expires", rec.ExpiresAt)
			return
		}
	}
	metrics.CSIRevocation(issuer, ns, outcome)
	d.log.Info("Token of an ended pod "+outcome, "pod", rec.Pod.Namespace+"/"+rec.Pod.Name, "volume", rec.VolumeID, "token", fingerprint(rec.AccessToken))
	v.gone = true
	if v.timer != nil {
		v.timer.Stop()
	}
	if err := d.state.remove(rec.VolumeID); err != nil {
		d.log.Error(err, "Cannot remove a volume record", "volume", rec.VolumeID)
	}
	id := rec.VolumeID
	v.rec = record{VolumeID: id, Unpublished: true} // the tokens leave memory too
	go d.forget(id)
}
