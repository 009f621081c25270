package main

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

var (
	blue   = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	orange = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	green  = color.RGBA{R: 44, G: 160, B: 44, A: 255}
)

func save(p *plot.Plot, dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	return path, p.Save(8*vg.Inch, 4*vg.Inch, path)
}

// plotSpread draws renewals per second (renew-at histogram) of one or more bursts.
func plotSpread(dir, name, title string, bursts []*BurstResult) (string, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds after the earliest renew-at"
	p.Y.Label.Text = "renewals due in that second"
	colors := []color.Color{blue, orange, green}
	w := vg.Points(3)
	for i, b := range bursts {
		vals := make(plotter.Values, len(b.RenewHist))
		for j, c := range b.RenewHist {
			vals[j] = float64(c)
		}
		if len(vals) == 0 {
			continue
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return "", err
		}
		bars.LineStyle.Width = 0
		bars.Color = colors[i%len(colors)]
		bars.Offset = vg.Length(i) * w
		p.Add(bars)
		p.Legend.Add(fmt.Sprintf("%s: N=%d, %s tokens, max %d/s", b.Label, b.N, b.Lifespan, b.MaxPerSec), bars)
	}
	p.Legend.Top = true
	return save(p, dir, name)
}

// plotScaling draws time-to-Ready and RSS against N.
func plotScaling(dir string, bursts []*BurstResult) ([]string, error) {
	var out []string
	p := plot.New()
	p.Title.Text = "Burst: time until all N resources are Ready"
	p.X.Label.Text = "N (resources created at once)"
	p.Y.Label.Text = "seconds"
	ready, p99 := plotter.XYs{}, plotter.XYs{}
	for _, b := range bursts {
		ready = append(ready, plotter.XY{X: float64(b.N), Y: b.AllReady.Seconds()})
		p99 = append(p99, plotter.XY{X: float64(b.N), Y: b.P99.Seconds()})
	}
	if err := plotutil.AddLinePoints(p, "all Ready (first create → last Ready)", ready, "p99 create → Ready", p99); err != nil {
		return nil, err
	}
	p.Legend.Top, p.Legend.Left = true, true
	path, err := save(p, dir, "scaling-time.png")
	if err != nil {
		return nil, err
	}
	out = append(out, path)

	p = plot.New()
	p.Title.Text = "Operator RSS against N"
	p.X.Label.Text = "N (resources)"
	p.Y.Label.Text = "MiB"
	rss, rssU := plotter.XYs{}, plotter.XYs{}
	for _, b := range bursts {
		rss = append(rss, plotter.XY{X: float64(b.N), Y: float64(b.RSS) / (1 << 20)})
		rssU = append(rssU, plotter.XY{X: float64(b.N), Y: float64(b.RSSUnrel) / (1 << 20)})
	}
	label := "after adding unrelated 4 KiB Secrets"
	if len(bursts) > 0 {
		label = fmt.Sprintf("after adding %d unrelated 4 KiB Secrets", bursts[0].Unrelated)
	}
	if err := plotutil.AddLinePoints(p, "with N resources", rss, label, rssU); err != nil {
		return nil, err
	}
	p.Y.Min = 0
	p.Legend.Top, p.Legend.Left = true, true
	path, err = save(p, dir, "scaling-rss.png")
	if err != nil {
		return nil, err
	}
	return append(out, path), nil
}

// plotSteady draws rotations seen and Keycloak requests per 10 s in the steady state.
func plotSteady(dir string, s *SteadyResult) (string, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Steady state: N=%d, 30 s tokens", s.N)
	p.X.Label.Text = "seconds into the steady state"
	p.Y.Label.Text = "per 10 s"
	rot, kc := plotter.XYs{}, plotter.XYs{}
	for i, c := range s.RotationSeries {
		rot = append(rot, plotter.XY{X: float64(i*10 + 5), Y: float64(c)})
	}
	for i, c := range s.KCSeries {
		kc = append(kc, plotter.XY{X: float64(i*10 + 5), Y: c})
	}
	if err := plotutil.AddLines(p, "token Secrets rotated (watch)", rot, "Keycloak requests (operator metric)", kc); err != nil {
		return "", err
	}
	p.Y.Min = 0
	p.Legend.Top = true
	return save(p, dir, "steady.png")
}

// plotRestart draws Keycloak requests per second after a restart against renewals due.
func plotRestart(dir string, r *RestartResult) (string, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Restart with N=%d valid tokens: the first %s", r.N, r.Window)
	p.X.Label.Text = "seconds after the new process started"
	p.Y.Label.Text = "per second"
	req, due := plotter.XYs{}, plotter.XYs{}
	for i, c := range r.ReqPerSecond {
		req = append(req, plotter.XY{X: float64(i + 1), Y: c})
	}
	for i, c := range r.DuePerSecond {
		due = append(due, plotter.XY{X: float64(i) + 0.5, Y: float64(c)})
	}
	if err := plotutil.AddLines(p, "Keycloak requests", req, "renewals due (renew-at)", due); err != nil {
		return "", err
	}
	p.Y.Min = 0
	p.Legend.Top = true
	return save(p, dir, "restart.png")
}
