// Package scrape reads Prometheus text expositions for the test suites and the benchmark
// (standard library only, so that the benchmark module can import it).
package scrape

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metrics maps each series of a Prometheus text exposition, as printed ("name{labels}"), to its
// value.
type Metrics map[string]float64

// Parse reads a Prometheus text exposition; comments and unparsable lines are skipped.
func Parse(r io.Reader) (Metrics, error) {
	out := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// Get reads http://addr/metrics.
func Get(addr string, timeout time.Duration) (Metrics, error) {
	c := http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return Parse(resp.Body)
}

// Sum adds up all series of a metric whose labels contain every given fragment.
func (m Metrics) Sum(name string, fragments ...string) float64 {
	var s float64
next:
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		for _, f := range fragments {
			if !strings.Contains(k, f) {
				continue next
			}
		}
		s += v
	}
	return s
}
