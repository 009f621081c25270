// Package probe checks that the HTTP endpoints of a running operator answer. The Helm chart's
// `helm test` runs it as `manager probe URL...` in the operator's own image, which has no shell,
// curl or wget to do it with.
package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
)

// Options of Check.
type Options struct {
	// Interval between attempts at one URL (default 2 s).
	Interval time.Duration
	// Client makes the requests (default: a client with a 5 s timeout).
	Client *http.Client
	// BearerToken, when set, is sent in the Authorization header.
	BearerToken string
	// InsecureSkipVerify: do not verify the server's certificate (default client only).
	InsecureSkipVerify bool
}

// Check requests each URL until it answers 200, or ctx ends. A URL whose path ends in /metrics
// must also answer in Prometheus' text format, so that a wrong port answering 200 with something
// else does not pass.
func Check(ctx context.Context, urls []string, o Options, log logr.Logger) error {
	if len(urls) == 0 {
		return errors.New("no URL to probe")
	}
	if o.Interval <= 0 {
		o.Interval = 2 * time.Second
	}
	if o.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // the operator's self-signed metrics certificate, on request
		o.Client = &http.Client{Timeout: 5 * time.Second, Transport: tr}
	}
	for _, u := range urls {
		if err := checkOne(ctx, u, o); err != nil {
			return err
		}
		log.Info("Endpoint answers", "url", u)
	}
	return nil
}

func checkOne(ctx context.Context, u string, o Options) error {
	var last error
	for {
		err := get(ctx, o.Client, u, o.BearerToken)
		if err == nil {
			return nil
		}
		if last == nil || ctx.Err() == nil {
			last = err // not the deadline cutting the last request short
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer in time: %w", u, last)
		case <-time.After(o.Interval):
		}
	}
}

func get(ctx context.Context, c *http.Client, u, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("answered %s", resp.Status)
	}
	if strings.HasSuffix(req.URL.Path, "/metrics") && !strings.Contains(string(body), "# TYPE ") {
		return errors.New("answered 200 but not with Prometheus metrics")
	}
	return nil
}
