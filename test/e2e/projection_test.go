package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
)

// projection stands in for the kubelet's Secret volume: it polls the Secret and, Delay after it
// saw a change, writes all of the Secret's keys into Dir the way the kubelet's atomic writer
// does:
//
//	Dir/..2026_11_28_12_00_00.000000001/<key>   the data, in a new timestamped directory
//	Dir/..data -> ..2026_11_28_12_00_00.000000001 (swapped by one rename of ..data_tmp)
//	Dir/<key>  -> ..data/<key>                  what the container reads
//
// and then removes the previous timestamped directory. When the Secret is deleted the files
// stay as they are (a running pod keeps its volume's last content).
type projection struct {
	Dir   string
	Delay time.Duration

	c      client.Client
	key    types.NamespacedName
	mu     sync.Mutex
	writes []projWrite
	gone   time.Time // first time the Secret was seen missing after a write
	seq    int
}

type projWrite struct {
	At        time.Time
	TokenHash string
	ExpiresAt string
}

func startProjection(ctx context.Context, t *testing.T, c client.Client, key types.NamespacedName, dir string, delay time.Duration) *projection {
	p := &projection{Dir: dir, Delay: delay, c: c, key: key}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		p.loop(pctx, t)
	}()
	return p
}

func (p *projection) loop(ctx context.Context, t *testing.T) {
	var written, pendingHash string
	var pending map[string][]byte
	var due time.Time
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s := &corev1.Secret{}
		err := p.c.Get(ctx, p.key, s)
		switch {
		case apierrors.IsNotFound(err):
			p.mu.Lock()
			if len(p.writes) > 0 && p.gone.IsZero() {
				p.gone = time.Now()
			}
			p.mu.Unlock()
		case err != nil:
			if ctx.Err() == nil {
				t.Logf("projection: reading Secret %s: %v", p.key, err)
			}
		default:
			if h := dataHash(s.Data); h != written && h != pendingHash {
				pending, pendingHash, due = s.Data, h, time.Now().Add(p.Delay)
			}
		}
		if pending != nil && !time.Now().Before(due) {
			if err := p.write(pending); err != nil {
				t.Errorf("projection: %v", err)
				return
			}
			written, pending, pendingHash = pendingHash, nil, ""
		}
	}
}

func (p *projection) write(data map[string][]byte) error {
	p.seq++
	ts := fmt.Sprintf("..%s.%09d", time.Now().UTC().Format("2006_01_02_15_04_05"), p.seq)
	if err := os.Mkdir(filepath.Join(p.Dir, ts), 0o755); err != nil {
		return err
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(p.Dir, ts, k), v, 0o644); err != nil {
			return err
		}
	}
	dataLink := filepath.Join(p.Dir, "..data")
	old, _ := os.Readlink(dataLink)
	tmp := filepath.Join(p.Dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(ts, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dataLink); err != nil {
		return err
	}
	for k := range data {
		user := filepath.Join(p.Dir, k)
		if _, err := os.Lstat(user); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", k), user); err != nil {
				return err
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(p.Dir, old)); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.writes = append(p.writes, projWrite{At: time.Now(), TokenHash: shortHash(data[tokensecret.KeyToken]), ExpiresAt: string(data[tokensecret.KeyExpiresAt])})
	p.mu.Unlock()
	return nil
}

// Writes returns the writes so far.
func (p *projection) Writes() []projWrite {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]projWrite(nil), p.writes...)
}

// Gone is when the Secret was first seen missing after the first write (zero if never).
func (p *projection) Gone() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone
}

// Token reads the projected token file, as the container would.
func (p *projection) Token(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.Dir, tokensecret.KeyToken))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func dataHash(m map[string][]byte) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%d:", k, len(m[k]))
		h.Write(m[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func shortHash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:12]
}
