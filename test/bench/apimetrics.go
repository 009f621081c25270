package main

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/scrape"
)

// The API server's own view: apiserver_request_duration_seconds by verb, resource and
// subresource (server-side latency, without the client's queueing).

type apiStat struct{ Sum, Count float64 }

type APISnap map[string]apiStat

var labelRe = regexp.MustCompile(`(\w+)="([^"]*)"`)

func (e *Env) apiSnapshot(ctx context.Context) APISnap {
	out := APISnap{}
	cs, err := kubernetes.NewForConfig(e.Cfg)
	if err != nil {
		return out
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return out
	}
	m, err := scrape.Parse(bytes.NewReader(raw))
	if err != nil {
		return out
	}
	for series, v := range m {
		var kind string
		switch {
		case strings.HasPrefix(series, "apiserver_request_duration_seconds_sum{"):
			kind = "sum"
		case strings.HasPrefix(series, "apiserver_request_duration_seconds_count{"):
			kind = "count"
		default:
			continue
		}
		l := map[string]string{}
		for _, kv := range labelRe.FindAllStringSubmatch(series, -1) {
			l[kv[1]] = kv[2]
		}
		if l["verb"] == "WATCH" || l["verb"] == "CONNECT" {
			continue
		}
		key := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			key += "/" + l["subresource"]
		}
		s := out[key]
		if kind == "sum" {
			s.Sum += v
		} else {
			s.Count += v
		}
		out[key] = s
	}
	return out
}

// APIDelta is the server-side latency per request kind over a phase, busiest first.
type APIDelta []struct {
	Key   string
	Count float64
	Mean  time.Duration
}

func (s APISnap) Since(b APISnap) APIDelta {
	var d APIDelta
	for k, v := range s {
		n := v.Count - b[k].Count
		if n <= 0 {
			continue
		}
		d = append(d, struct {
			Key   string
			Count float64
			Mean  time.Duration
		}{k, n, Mean(v.Sum-b[k].Sum, n)})
	}
	sort.Slice(d, func(i, j int) bool { return d[i].Count > d[j].Count })
	return d
}

func (d APIDelta) String() string {
	var parts []string
	for i, x := range d {
		if i == 8 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s ×%.0f (mean %s)", x.Key, x.Count, x.Mean.Round(100*time.Microsecond)))
	}
	return strings.Join(parts, ", ")
}
