package switcher

import "fmt"

// Color names one of the two app slots. The zero value is Blue.
type Color uint8

// The two colours.
const (
	Blue Color = iota
	Green
)

// Colors lists both colours in order, blue first.
var Colors = [2]Color{Blue, Green}

// String returns "blue" or "green".
func (c Color) String() string {
	if c == Green {
		return "green"
	}
	return "blue"
}

// Other returns the colour that is not c.
func (c Color) Other() Color { return 1 - c }

// ParseColor parses "blue" or "green".
func ParseColor(s string) (Color, error) {
	switch s {
	case "blue":
		return Blue, nil
	case "green":
		return Green, nil
	}
	return Blue, fmt.Errorf("colour %q: want blue or green: %w", s, ErrInvalid)
}

// MarshalText returns the colour's name, so that a Color reads "blue" or
// "green" in JSON and in JSON logs rather than 0 or 1.
func (c Color) MarshalText() ([]byte, error) { return []byte(c.String()), nil }
