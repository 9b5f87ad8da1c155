package probe

import (
	"bufio"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// canvas is the little the plot draws with, so that one layout gives both
// an SVG and a PNG. Coordinates are pixels from the top left; colours are
// "#rrggbb".
type canvas interface {
	rect(x, y, w, h float64, fill string, opacity float64)
	line(x1, y1, x2, y2 float64, stroke string, width float64, dashed bool)
	// dots draws discs of radius r at (xs[i], ys[i]).
	dots(xs, ys []float64, r float64, fill string, opacity float64)
	// crosses draws "×" marks of half-size r.
	crosses(xs, ys []float64, r float64, stroke string)
	// text draws s with its baseline at y; anchor is "start", "middle" or
	// "end".
	text(x, y float64, s, anchor, fill string, bold bool)
	// textWidth is the width text would take.
	textWidth(s string) float64
}

// svgCanvas writes SVG elements as they are drawn.
type svgCanvas struct {
	w   *bufio.Writer
	err error
}

func newSVG(w io.Writer, width, height int) *svgCanvas {
	c := &svgCanvas{w: bufio.NewWriter(w)}
	c.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	c.printf(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	return c
}

func (c *svgCanvas) printf(format string, args ...any) {
	if c.err == nil {
		_, c.err = fmt.Fprintf(c.w, format, args...)
	}
}

func (c *svgCanvas) close() error {
	c.printf("</svg>\n")
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func (c *svgCanvas) rect(x, y, w, h float64, fill string, opacity float64) {
	c.printf(`<rect x="%s" y="%s" width="%s" height="%s" fill="%s" fill-opacity="%g"/>`+"\n", f1(x), f1(y), f1(w), f1(h), fill, opacity)
}

func (c *svgCanvas) line(x1, y1, x2, y2 float64, stroke string, width float64, dashed bool) {
	dash := ""
	if dashed {
		dash = ` stroke-dasharray="4 3"`
	}
	c.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="%g"%s/>`+"\n", f1(x1), f1(y1), f1(x2), f1(y2), stroke, width, dash)
}

func (c *svgCanvas) dots(xs, ys []float64, r float64, fill string, opacity float64) {
	c.printf(`<g fill="%s" fill-opacity="%g">`+"\n", fill, opacity)
	for i := range xs {
		c.printf(`<circle cx="%s" cy="%s" r="%g"/>`+"\n", f1(xs[i]), f1(ys[i]), r)
	}
	c.printf("</g>\n")
}

func (c *svgCanvas) crosses(xs, ys []float64, r float64, stroke string) {
	if len(xs) == 0 {
		return
	}
	c.printf(`<path fill="none" stroke="%s" stroke-width="1.8" d="`, stroke)
	for i := range xs {
		x, y := xs[i], ys[i]
		c.printf("M%s %sL%s %sM%s %sL%s %s", f1(x-r), f1(y-r), f1(x+r), f1(y+r), f1(x-r), f1(y+r), f1(x+r), f1(y-r))
	}
	c.printf(`"/>` + "\n")
}

func (c *svgCanvas) text(x, y float64, s, anchor, fill string, bold bool) {
	weight := ""
	if bold {
		weight = ` font-weight="bold" font-size="15"`
	}
	c.printf(`<text x="%s" y="%s" text-anchor="%s" fill="%s"%s>%s</text>`+"\n", f1(x), f1(y), anchor, fill, weight, html.EscapeString(s))
}

// textWidth estimates the width of 12px sans-serif text.
func (c *svgCanvas) textWidth(s string) float64 { return 6.8 * float64(len([]rune(s))) }

// rasterCanvas draws into an RGBA image, for PNG. It does no
// anti-aliasing; text is the 7x13 bitmap font.
type rasterCanvas struct {
	img *image.RGBA
}

func newRaster(width, height int) *rasterCanvas {
	c := &rasterCanvas{img: image.NewRGBA(image.Rect(0, 0, width, height))}
	c.rect(0, 0, float64(width), float64(height), "#ffffff", 1)
	return c
}

func (c *rasterCanvas) encode(w io.Writer) error { return png.Encode(w, c.img) }

func parseHex(s string) color.RGBA {
	var r, g, b uint8
	if len(s) == 7 {
		v, _ := strconv.ParseUint(s[1:], 16, 32)
		r, g, b = uint8(v>>16), uint8(v>>8), uint8(v)
	}
	return color.RGBA{r, g, b, 255}
}

// blend paints pixel (x, y) with col at opacity a.
func (c *rasterCanvas) blend(x, y int, col color.RGBA, a float64) {
	if !(image.Point{x, y}.In(c.img.Rect)) {
		return
	}
	i := c.img.PixOffset(x, y)
	p := c.img.Pix[i : i+3 : i+3]
	p[0] = uint8(float64(p[0])*(1-a) + float64(col.R)*a + 0.5)
	p[1] = uint8(float64(p[1])*(1-a) + float64(col.G)*a + 0.5)
	p[2] = uint8(float64(p[2])*(1-a) + float64(col.B)*a + 0.5)
	c.img.Pix[i+3] = 255
}

func (c *rasterCanvas) rect(x, y, w, h float64, fill string, opacity float64) {
	col := parseHex(fill)
	for py := int(math.Round(y)); py < int(math.Round(y+h)); py++ {
		for px := int(math.Round(x)); px < int(math.Round(x+w)); px++ {
			c.blend(px, py, col, opacity)
		}
	}
}

func (c *rasterCanvas) line(x1, y1, x2, y2 float64, stroke string, width float64, dashed bool) {
	col := parseHex(stroke)
	n := int(math.Max(math.Abs(x2-x1), math.Abs(y2-y1))) + 1
	half := int(math.Max(0, math.Round(width/2-0.5)))
	for i := 0; i <= n; i++ {
		if dashed && i%7 >= 4 {
			continue
		}
		t := float64(i) / float64(n)
		px, py := int(math.Round(x1+(x2-x1)*t)), int(math.Round(y1+(y2-y1)*t))
		for dy := -half; dy <= half; dy++ {
			for dx := -half; dx <= half; dx++ {
				c.blend(px+dx, py+dy, col, 1)
			}
		}
	}
}

func (c *rasterCanvas) dots(xs, ys []float64, r float64, fill string, opacity float64) {
	col := parseHex(fill)
	ri := int(math.Ceil(r))
	for i := range xs {
		cx, cy := int(math.Round(xs[i])), int(math.Round(ys[i]))
		for dy := -ri; dy <= ri; dy++ {
			for dx := -ri; dx <= ri; dx++ {
				if float64(dx*dx+dy*dy) <= r*r+0.5 {
					c.blend(cx+dx, cy+dy, col, opacity)
				}
			}
		}
	}
}

func (c *rasterCanvas) crosses(xs, ys []float64, r float64, stroke string) {
	for i := range xs {
		x, y := xs[i], ys[i]
		c.line(x-r, y-r, x+r, y+r, stroke, 2, false)
		c.line(x-r, y+r, x+r, y-r, stroke, 2, false)
	}
}

var face = basicfont.Face7x13

func (c *rasterCanvas) text(x, y float64, s, anchor, fill string, bold bool) {
	w := c.textWidth(s)
	switch anchor {
	case "middle":
		x -= w / 2
	case "end":
		x -= w
	}
	d := &font.Drawer{Dst: c.img, Src: image.NewUniform(parseHex(fill)), Face: face,
		Dot: fixed.P(int(math.Round(x)), int(math.Round(y)))}
	d.DrawString(s)
	if bold {
		d.Dot = fixed.P(int(math.Round(x))+1, int(math.Round(y)))
		d.DrawString(s)
	}
}

func (c *rasterCanvas) textWidth(s string) float64 {
	return float64(font.MeasureString(face, s).Round())
}
