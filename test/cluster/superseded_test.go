package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// supersededGrace is the training resource's spec.revocation.supersededGracePeriod: the plugin
// job's pod is nudged, so it reads a new token within a second or two.
const supersededGrace = 5 * time.Second

// supersededWatch follows the training resource's Secret and, for every token a rotation
// replaces, asks Keycloak (introspection) until that token is inactive: how long after the
// rotation it was revoked (spec.revocation.revokeSuperseded). A failover of the operator between
// the rotation and the grace period's end delays the revocation by the takeover: such tokens are
// counted apart.
type supersededWatch struct {
	mu         sync.Mutex
	delays     []time.Duration // rotation → inactive, without a failover in between
	overFail   []time.Duration // ... with a leader change in between
	neverAfter int             // superseded tokens still active when they expired
	wg         sync.WaitGroup
	quit       chan struct{}
}

func watchSuperseded(ns, secret string) *supersededWatch {
	w := &supersededWatch{quit: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		last := ""
		for {
			select {
			case <-w.quit:
				return
			case <-time.After(200 * time.Millisecond):
			}
			data, err := secretData(context.Background(), ns, secret)
			if err != nil {
				continue
			}
			tok := string(data[tokensecret.KeyToken])
			if last != "" && tok != last {
				w.wg.Add(1)
				go w.follow(last, time.Now())
			}
			last = tok
		}
	}()
	return w
}

// follow introspects a superseded token until it is inactive or expired.
func (w *supersededWatch) follow(old string, rotated time.Time) {
	defer w.wg.Done()
	holder := func() string {
		l, err := lease(context.Background(), chartNS)
		if err != nil {
			return ""
		}
		return holderOf(l)
	}
	before := holder()
	exp := jwtExpiry(old)
	for time.Now().Before(exp) {
		active, err := introspect(realmMLflow, ccClientID, ccClientSecret, old, "access_token")
		if err == nil && !active {
			d := time.Since(rotated)
			w.mu.Lock()
			if h := holder(); h != before {
				w.overFail = append(w.overFail, d)
			} else {
				w.delays = append(w.delays, d)
			}
			w.mu.Unlock()
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	w.mu.Lock()
	w.neverAfter++
	w.mu.Unlock()
}

// stop ends the watch and returns its findings.
func (w *supersededWatch) stop() (delays, overFailover []time.Duration, never int) {
	close(w.quit)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	slices.Sort(w.delays)
	return w.delays, w.overFail, w.neverAfter
}

func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d, %s to %s", len(ds), slices.Min(ds).Round(100*time.Millisecond), slices.Max(ds).Round(100*time.Millisecond))
}
