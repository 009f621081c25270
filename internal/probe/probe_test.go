package probe

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

func TestCheck(t *testing.T) {
	var calls atomic.Int32
	mux := http.NewServeMux()
	// /metrics fails twice (the operator starting), then answers.
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) <= 2 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("# HELP up x\n# TYPE up gauge\nup 1\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/html/metrics", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>")) })
	mux.HandleFunc("/down", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", http.StatusInternalServerError) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o := Options{Interval: 10 * time.Millisecond}
	if err := Check(ctx, []string{srv.URL + "/metrics", srv.URL + "/readyz"}, o, logr.Discard()); err != nil {
		t.Fatalf("healthy endpoints: %v", err)
	}
	if calls.Load() != 3 {
		t.Errorf("/metrics was requested %d times, want 3 (two failures, then success)", calls.Load())
	}

	for path, want := range map[string]string{
		"/down":         "500 Internal Server Error",
		"/html/metrics": "not with Prometheus metrics",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := Check(ctx, []string{srv.URL + path}, o, logr.Discard())
		cancel()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", path, err, want)
		}
	}
	if err := Check(context.Background(), nil, o, logr.Discard()); err == nil {
		t.Error("no URL: want an error")
	}
}
