package probe

import (
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Plot size in pixels.
const (
	plotWidth  = 1200
	plotHeight = 560
	// maxDots caps the successful requests drawn; beyond it every n-th is
	// drawn (failures are always all drawn).
	maxDots = 40000
)

// versionColors are the colours of versions in order of first answer. Red
// is kept for failures.
var versionColors = []string{"#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"}

const (
	failColor  = "#d62728"
	okColor    = "#2ca02c"
	textColor  = "#222222"
	mutedColor = "#666666"
	gridColor  = "#e3e3e3"
)

// WritePlotFile writes the timeline to path, as PNG if path ends in .png
// and as SVG otherwise.
func (r *Report) WritePlotFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	format := "svg"
	if strings.EqualFold(filepath.Ext(path), ".png") {
		format = "png"
	}
	if err := r.WritePlot(f, format); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

// WritePlot draws the timeline in format "svg" or "png": each request's
// latency (log scale) against the time it started, successes coloured by
// the version that answered, failures as red crosses (and a red tick under
// the axis), marks as grey bands with the swap as a dashed line, and the
// longest window without a success shaded red when it stands out. The title
// says whether any request failed.
func (r *Report) WritePlot(w io.Writer, format string) error {
	switch format {
	case "svg":
		c := newSVG(w, plotWidth, plotHeight)
		r.draw(c)
		return c.close()
	case "png":
		c := newRaster(plotWidth, plotHeight)
		r.draw(rasterText{c})
		return c.encode(w)
	}
	return fmt.Errorf("plot format %q: want svg or png", format)
}

// rasterText replaces the characters the bitmap font lacks.
type rasterText struct{ *rasterCanvas }

var asciiArrows = strings.NewReplacer("→", "->", "—", "-", "…", "...", "µ", "u", "·", "|")

func (c rasterText) text(x, y float64, s, anchor, fill string, bold bool) {
	c.rasterCanvas.text(x, y, asciiArrows.Replace(s), anchor, fill, bold)
}

func (c rasterText) textWidth(s string) float64 {
	return c.rasterCanvas.textWidth(asciiArrows.Replace(s))
}

func (r *Report) draw(c canvas) {
	const (
		left, right = 78.0, 250.0
		top, bottom = 78.0, 52.0
	)
	x0, x1 := left, float64(plotWidth)-right
	y0, y1 := top, float64(plotHeight)-bottom

	// Time axis: from the start of the probe to the end of the last answer.
	end := r.End
	for _, res := range r.Results {
		if e := res.Start.Add(res.Duration); e.After(end) {
			end = e
		}
	}
	span := max(end.Sub(r.Start).Seconds(), 0.001)
	xOf := func(t time.Time) float64 {
		return x0 + (x1-x0)*min(max(t.Sub(r.Start).Seconds()/span, 0), 1)
	}

	// Latency axis: whole decades around the data, at least two.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, res := range r.Results {
		s := max(res.Duration.Seconds(), 1e-5)
		lo, hi = min(lo, s), max(hi, s)
	}
	if len(r.Results) == 0 {
		lo, hi = 1e-3, 1
	}
	dLo, dHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dHi-dLo < 2 {
		dLo = dHi - 2
	}
	yOf := func(d time.Duration) float64 {
		v := math.Log10(max(d.Seconds(), 1e-5))
		return y1 - (y1-y0)*min(max((v-dLo)/(dHi-dLo), 0), 1)
	}

	failures := r.Failures()
	title, titleColor := fmt.Sprintf("CLEAN — all %d requests succeeded", r.Total()), okColor
	if len(failures) > 0 {
		var parts []string
		byKind := r.FailuresByKind()
		for _, k := range slices.Sorted(maps.Keys(byKind)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, byKind[k]))
		}
		title, titleColor = fmt.Sprintf("NOT CLEAN — %d of %d requests failed (%s)", len(failures), r.Total(), strings.Join(parts, ", ")), failColor
	} else if r.Total() == 0 {
		title, titleColor = "NO REQUESTS", failColor
	}
	c.text(x0, 28, title, "start", titleColor, true)
	c.text(x0, 48, fmt.Sprintf("baton probe %s · %s · longest gap without a success %s",
		r.URL, r.Start.Local().Format("2006-01-02 15:04:05"), fmtDur(r.LongestGap())), "start", mutedColor, false)

	// Grid and axes.
	for d := dLo; d <= dHi; d++ {
		y := y1 - (y1-y0)*(d-dLo)/(dHi-dLo)
		c.line(x0, y, x1, y, gridColor, 1, false)
		c.text(x0-8, y+4, fmtDur(time.Duration(math.Pow(10, d)*float64(time.Second))), "end", mutedColor, false)
	}
	step := niceStep(span)
	for s := 0.0; s <= span+1e-9; s += step {
		x := x0 + (x1-x0)*s/span
		c.line(x, y0, x, y1, gridColor, 1, false)
		c.text(x, y1+18, fmtSeconds(s, step), "middle", mutedColor, false)
	}
	c.line(x0, y1, x1, y1, mutedColor, 1, false)
	c.line(x0, y0, x0, y1, mutedColor, 1, false)
	c.text((x0+x1)/2, y1+40, "time since the probe started", "middle", mutedColor, false)
	c.text(x0-8, y0-12, "latency", "end", mutedColor, false)

	// The longest gap, when it stands out from the request rate.
	gFrom, gTo := r.LongestGapWindow()
	gap := gTo.Sub(gFrom)
	okCount := r.Total() - len(failures)
	typical := time.Duration(float64(end.Sub(r.Start)) / float64(max(okCount, 1)))
	showGap := gap >= 100*time.Millisecond && gap > 20*typical
	// Red when requests failed, amber when answers were only slow.
	gapColor := "#e6a700"
	if len(failures) > 0 {
		gapColor = failColor
	}
	if showGap {
		gx0, gx1 := xOf(gFrom), xOf(gTo)
		c.rect(gx0, y0, max(gx1-gx0, 2), y1-y0, gapColor, 0.18)
	}

	// Marks: a band for the operation, a dashed line at the swap.
	type labelSpan struct{ x0, x1 float64 }
	var rows [3][]labelSpan
	for _, m := range r.sortedMarks() {
		mx0 := xOf(m.Start)
		mx1 := mx0
		if !m.End.IsZero() {
			mx1 = xOf(m.End)
		}
		fill := "#000000"
		if m.Failed {
			fill = failColor
		}
		c.rect(mx0, y0, max(mx1-mx0, 1.5), y1-y0, fill, 0.07)
		if !m.At.IsZero() {
			ax := xOf(m.At)
			c.line(ax, y0, ax, y1, "#444444", 1, true)
		}
		label := m.Label
		if m.Failed {
			label += " (failed)"
		}
		lw := c.textWidth(label)
		row := 0
		for row < len(rows)-1 && slices.ContainsFunc(rows[row], func(s labelSpan) bool { return mx0 < s.x1+6 && mx0+lw > s.x0 }) {
			row++
		}
		rows[row] = append(rows[row], labelSpan{mx0, mx0 + lw})
		c.text(mx0+2, y0+14+14*float64(row), label, "start", "#444444", false)
	}

	// Successes by version, then failures on top.
	versions := r.Versions()
	colorOf := map[string]string{}
	for i, v := range versions {
		colorOf[v] = versionColors[i%len(versionColors)]
	}
	every := max(1, (okCount+maxDots-1)/maxDots)
	xs, ys := map[string][]float64{}, map[string][]float64{}
	var fx, fy []float64
	n := 0
	for _, res := range r.Results {
		if !res.OK() {
			fx, fy = append(fx, xOf(res.Start)), append(fy, yOf(res.Duration))
			continue
		}
		if n++; n%every != 0 {
			continue
		}
		xs[res.Version] = append(xs[res.Version], xOf(res.Start))
		ys[res.Version] = append(ys[res.Version], yOf(res.Duration))
	}
	for _, v := range versions {
		c.dots(xs[v], ys[v], 2.5, colorOf[v], 0.6)
	}
	c.crosses(fx, fy, 4, failColor)
	for _, x := range fx {
		c.line(x, y1+2, x, y1+9, failColor, 1.5, false)
	}

	// Legend.
	lx, ly := x1+24, y0+4
	legendLine := func(s, color string) {
		c.text(lx+14, ly+4, s, "start", color, false)
		ly += 20
	}
	count := map[string]int{}
	for _, res := range r.Results {
		if res.OK() {
			count[res.Version]++
		}
	}
	for _, v := range versions {
		c.dots([]float64{lx + 4}, []float64{ly}, 4, colorOf[v], 1)
		first, _ := r.FirstSeen(v)
		name := v
		if name == "" {
			name = "(no version)"
		}
		legendLine(fmt.Sprintf("%s: %d ok, first +%s", name, count[v], fmtDur(first.Sub(r.Start))), textColor)
	}
	c.crosses([]float64{lx + 4}, []float64{ly}, 4, failColor)
	failText := fmt.Sprintf("failed: %d", len(failures))
	if len(failures) == 0 {
		legendLine(failText, textColor)
	} else {
		legendLine(failText, failColor)
	}
	if len(r.Marks) > 0 {
		c.rect(lx-1, ly-6, 10, 12, "#000000", 0.15)
		legendLine("switch (dashed: swap)", textColor)
	}
	if showGap {
		c.rect(lx-1, ly-6, 10, 12, gapColor, 0.35)
		legendLine("longest no-success gap", textColor)
	}
	ly += 10
	for _, s := range []string{
		fmt.Sprintf("p50 %s", fmtDur(r.Percentile(50))),
		fmt.Sprintf("p99 %s", fmtDur(r.Percentile(99))),
		fmt.Sprintf("max %s", fmtDur(r.Percentile(100))),
		fmt.Sprintf("longest gap %s", fmtDur(r.LongestGap())),
	} {
		c.text(lx, ly+4, s, "start", textColor, false)
		ly += 18
	}
	if every > 1 {
		c.text(lx, ly+4, fmt.Sprintf("(1 in %d successes drawn)", every), "start", mutedColor, false)
	}
}

// niceStep returns a tick step for a span of seconds giving 5 to 12 ticks.
func niceStep(span float64) float64 {
	for _, s := range []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200} {
		if span/s <= 12 {
			return s
		}
	}
	return math.Ceil(span/12/3600) * 3600
}

func fmtSeconds(s, step float64) string {
	switch {
	case step >= 60:
		return (time.Duration(s) * time.Second).String()
	case step < 1:
		return strconv.FormatFloat(s, 'f', int(-math.Floor(math.Log10(step))), 64) + "s"
	}
	return fmt.Sprintf("%gs", s)
}

// fmtDur prints d with three significant digits at most.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d >= 10*time.Microsecond:
		return d.Round(100 * time.Nanosecond).String()
	}
	return d.String()
}
