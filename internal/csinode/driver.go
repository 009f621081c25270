package csinode

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/metrics"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/policy"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/scope"
)

// DefaultDriverName is the CSI driver's name (the CSIDriver object's and the pods' csi.driver).
const DefaultDriverName = "csi.mlflow-token-operator.io"

// Config configures the node plugin; cmd/ fills it from flags.
type Config struct {
	DriverName string
	// NodeID is the node's name (NodeGetInfo).
	NodeID string
	// StateDir keeps one record per volume (root only): on the node, under the kubelet's plugin
	// directory of this driver.
	StateDir string
	// ClusterResourceNamespace is where ClusterKeycloakIssuers' CA ConfigMaps are (the
	// operator's namespace).
	ClusterResourceNamespace string
	// Guardrails are the operator's: the chart passes both the same flags.
	Guardrails scope.Guardrails
	// KeycloakTimeout bounds one exchange with Keycloak.
	KeycloakTimeout time.Duration
	// Backoff paces retries of failed rotations and revocations.
	Backoff policy.Backoff
	// SweepInterval is how often volumes whose pod directory is gone are looked for.
	SweepInterval time.Duration
}

// Driver is the node plugin: CSI Identity and Node services plus the rotation of every volume.
type Driver struct {
	cfg    Config
	lookup Lookup
	kc     keycloak.Client
	clock  clock.WithTickerAndDelayedExecution
	log    logr.Logger
	state  *stateDir

	mu   sync.Mutex
	vols map[string]*volume
}

// volume is one pod's volume. Its lock serializes publish, rotation and unpublish.
type volume struct {
	mu  sync.Mutex
	rec record
	// timer fires the next rotation or retry; failures count attempts failed in a row.
	timer    clock.Timer
	next     time.Time
	failures int32
	lastFail time.Time
	// gone: unpublished and revoked (or given up): the timer must not act any more.
	gone bool
}

// New returns a driver; Start loads its state and starts the rotations.
func New(cfg Config, lookup Lookup, kc keycloak.Client, clk clock.WithTickerAndDelayedExecution, log logr.Logger) (*Driver, error) {
	if cfg.DriverName == "" {
		cfg.DriverName = DefaultDriverName
	}
	if cfg.KeycloakTimeout <= 0 {
		cfg.KeycloakTimeout = 10 * time.Second
	}
	if cfg.Backoff.Initial <= 0 {
		cfg.Backoff = policy.Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute, MaxTransient: 30 * time.Second}
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = time.Minute
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	st, err := openState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	return &Driver{cfg: cfg, lookup: lookup, kc: kc, clock: clk, log: log, state: st, vols: map[string]*volume{}}, nil
}

// Start loads the records a previous run left and resumes each volume: rotations of running pods
// continue where they were due, and volumes whose pod ended meanwhile are revoked. It then sweeps
// every SweepInterval until ctx ends (in the background).
func (d *Driver) Start(ctx context.Context) {
	recs, errs := d.state.load()
	for _, err := range errs {
		d.log.Error(err, "Cannot read a volume record; left in place")
	}
	for _, rec := range recs {
		v := &volume{rec: *rec}
		d.mu.Lock()
		d.vols[rec.VolumeID] = v
		d.mu.Unlock()
		v.mu.Lock()
		switch {
		case rec.Unpublished || !podVolumeExists(rec.TargetPath):
			d.log.Info("Resuming the revocation of an ended pod's token", "pod", rec.Pod.Namespace+"/"+rec.Pod.Name, "volume", rec.VolumeID)
			d.startRevocation(v)
		default:
			d.log.Info("Resuming a volume", "pod", rec.Pod.Namespace+"/"+rec.Pod.Name, "volume", rec.VolumeID, "expires", rec.ExpiresAt)
			// Files are swapped before the record is saved (delivery first): after a crash in
			// between they hold a newer token than the record, which is left alone. Only missing
			// files are written again.
			if publishedToken(rec.TargetPath) == "" && d.clock.Now().Before(rec.ExpiresAt) {
				if err := publishFiles(rec.TargetPath, files(&v.rec)); err != nil {
					d.log.Error(err, "Cannot rewrite a volume's files", "volume", rec.VolumeID)
				}
			}
			d.schedule(v, d.renewAt(&v.rec))
		}
		v.mu.Unlock()
	}
	d.observe()
	go d.sweepLoop(ctx)
}

// get returns the volume of an id (nil when unknown).
func (d *Driver) get(id string) *volume {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.vols[id]
}

func (d *Driver) forget(id string) {
	d.mu.Lock()
	delete(d.vols, id)
	d.mu.Unlock()
	d.observe()
}

// renewAt is when the volume's token is due: the policy package's rule for MLflowAccessTokens,
// with jitter derived from the volume and the issue time.
func (d *Driver) renewAt(rec *record) time.Time {
	p := policy.RenewalTime(rec.IssuedAt, rec.ExpiresAt, rec.Spec.RenewBefore, policy.Jitter(rec.VolumeID, rec.IssuedAt.String()))
	return p.RenewAt
}

// schedule (re)arms v's timer for at. Called with v.mu held.
func (d *Driver) schedule(v *volume, at time.Time) {
	if v.timer != nil {
		v.timer.Stop()
	}
	v.next = at
	v.timer = nil
	delay := at.Sub(d.clock.Now())
	if delay <= 0 {
		go d.tick(v)
		return
	}
	// tick takes v.mu in a goroutine of its own: a clock may run the function while it holds
	// its own lock (the fake clock of the tests does), and tick reads the clock.
	v.timer = d.clock.AfterFunc(delay, func() { go d.tick(v) })
}

// observe recounts the volume gauges.
func (d *Driver) observe() {
	d.mu.Lock()
	vols := make([]*volume, 0, len(d.vols))
	for _, v := range d.vols {
		vols = append(vols, v)
	}
	d.mu.Unlock()
	now := d.clock.Now()
	counts := map[[2]string]metrics.CSIVolumeCounts{}
	for _, v := range vols {
		v.mu.Lock()
		if !v.gone && !v.rec.Unpublished && v.rec.AccessToken != "" {
			k := [2]string{v.rec.Spec.Issuer(), v.rec.Pod.Namespace}
			c := counts[k]
			c.Volumes++
			if !now.Before(v.rec.ExpiresAt) {
				c.Expired++
			}
			if c.NextRotation.IsZero() || v.next.Before(c.NextRotation) {
				c.NextRotation = v.next
			}
			counts[k] = c
		}
		v.mu.Unlock()
	}
	metrics.CSIObserveVolumes(counts)
}

// fingerprint names a token in logs without revealing it: the first 12 hex digits of its
// SHA-256, the form `make run-local` and the Secrets' token-sha256 annotation use.
func fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:6])
}

// count is how many volumes the plugin tracks.
func (d *Driver) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.vols)
}
