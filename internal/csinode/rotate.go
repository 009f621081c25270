package csinode

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
)

// tick is a volume's timer: the next rotation, or the next try of a pending revocation.
func (d *Driver) tick(v *volume) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.gone {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*d.cfg.KeycloakTimeout)
	defer cancel()
	if v.rec.Unpublished {
		d.revoke(ctx, v)
		return
	}
	_ = d.renew(ctx, v, "rotation")
}

// renew obtains a new token for a published volume and swaps it in. On failure the current token
// stays in place (valid until it expires) and the next try is scheduled by policy.Backoff, at
// most a quarter of the token's remaining life away, so several tries fit before it expires.
// Called with v.mu held.
func (d *Driver) renew(ctx context.Context, v *volume, kind string) error {
	rec := v.rec
	issuer, ns := rec.Spec.Issuer(), rec.Pod.Namespace
	now := d.clock.Now()
	var err error
	if !now.Before(rec.AssertionExpires) {
		// The kubelet refreshes it at every republish (about once a minute): a kubelet that has
		// not called for the whole life of the pod's token is itself in trouble.
		err = status.Errorf(codes.Unavailable, "the pod's service-account token expired at %s and the kubelet has not passed a new one (republish)", rec.AssertionExpires.UTC().Format(time.RFC3339))
	}
	var answered time.Time
	if err == nil {
		tokens := map[string]serviceAccountToken{(&keycloak.Endpoint{URL: rec.URL, Realm: rec.Realm}).IssuerURL(): {Token: rec.AssertionToken, Expires: rec.AssertionExpires}}
		rec, answered, err = d.issue(ctx, rec, tokens)
	}
	if err == nil {
		err = d.deliver(v, rec, answered)
	}
	if err != nil {
		v.failures++
		v.lastFail = now.Truncate(time.Second)
		var validUntil *time.Time
		if now.Before(v.rec.ExpiresAt) {
			validUntil = &v.rec.ExpiresAt
		}
		retry := d.cfg.Backoff.RetryAt(policy.Failure{At: v.lastFail, Count: v.failures, Transient: transient(err)}, validUntil, v.rec.VolumeID)
		d.schedule(v, retry)
		metrics.CSIFailure(issuer, ns, kind, failureReason(err))
		d.log.Info("Rotation failed; the current token stays", "pod", rec.Pod.Namespace+"/"+rec.Pod.Name, "volume", rec.VolumeID,
			"reason", err.Error(), "failures", v.failures, "retryAt", retry, "expires", v.rec.ExpiresAt)
		go d.observe()
		return err
	}
	metrics.CSIIssuance(issuer, ns, kind)
	d.log.Info("Rotated a token", "pod", rec.Pod.Namespace+"/"+rec.Pod.Name, "volume", rec.VolumeID, "token", fingerprint(rec.AccessToken),
		"answeredAt", answered.UTC().Format(time.RFC3339Nano), "expires", rec.ExpiresAt, "renewAt", v.next)
	go d.observe() // it takes every volume's lock, maybe the one held here
	return nil
}

// podVolumeExists reports whether the kubelet still has the volume's directory (the parent of
// the target path, which holds its vol_data.json): once it is gone, the pod has ended.
func podVolumeExists(targetPath string) bool {
	_, err := os.Stat(filepath.Dir(targetPath))
	return err == nil
}

// sweepLoop finds volumes whose pod ended without an unpublish (the kubelet cleaned up while this
// plugin was down or unregistered) and revokes their tokens.
func (d *Driver) sweepLoop(ctx context.Context) {
	t := d.clock.NewTicker(d.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		d.mu.Lock()
		vols := make([]*volume, 0, len(d.vols))
		for _, v := range d.vols {
			vols = append(vols, v)
		}
		d.mu.Unlock()
		for _, v := range vols {
			v.mu.Lock()
			if !v.gone && !v.rec.Unpublished && v.rec.VolumeID != "" && !podVolumeExists(v.rec.TargetPath) {
				d.log.Info("The pod's volume directory is gone; revoking its token", "pod", v.rec.Pod.Namespace+"/"+v.rec.Pod.Name, "volume", v.rec.VolumeID)
				d.startRevocation(v)
			}
			v.mu.Unlock()
		}
	}
}
