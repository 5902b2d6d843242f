package collector

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Text is an exposition in the text format (version 0.0.4), written
// straight from the collectors' model: the same series, help and types as
// their Collect, which the registry would gather and expfmt encode, without
// building a metric, a label pair or a dto.MetricFamily per series. It is
// how the agent answers a scrape that negotiates the text format
// (server/answer.go); tests check that it matches expfmt's encoding of the
// collectors' gathered families (text_test.go).
//
// The series are grouped by family; families are written in name order
// and, within a family, in the order the collectors send them (the
// registry sorts them by label values; Prometheus does not need it). The
// consistency checks of the registry, done once per series there, are
// done once per pool and database here (textSafe): a collector whose
// series would fail them reports it, and the caller then uses the
// registry. A Text is reused after Reset; it is not safe for concurrent
// use.
type Text struct {
	byName map[string]*textFamily
	fams   []*textFamily
}

// textFamily is one family's text: its header and its sample lines. A
// family without lines is left out, as the registry leaves out a family
// without metrics.
type textFamily struct {
	name, help string
	counter    bool
	// raw, when set, is the whole family as expfmt wrote it (gathered).
	raw   []byte
	lines []byte
	// used is set once a source has claimed the family in this Text.
	used bool
}

// NewText returns an empty Text.
func NewText() *Text { return &Text{byName: map[string]*textFamily{}} }

// Reset empties t, keeping its buffers.
func (t *Text) Reset() {
	for _, f := range t.fams {
		f.raw, f.lines, f.used = f.raw[:0], f.lines[:0], false
	}
}

// errFamilyClash is returned when two sources have a family of the same
// name with different help or type, or when a gathered family has the name
// of a collector's: the registry's merge reports such clashes, Text does
// not merge them.
var errFamilyClash = errors.New("two sources of one metric family")

// family returns the text family of that name, a new one if needed.
func (t *Text) family(name, help string, counter bool) (*textFamily, error) {
	f := t.byName[name]
	if f == nil {
		f = &textFamily{name: name, help: help, counter: counter}
		t.byName[name] = f
		t.fams = append(t.fams, f)
	}
	if f.used && (f.help != help || f.counter != counter || len(f.raw) > 0) {
		return nil, fmt.Errorf("%w: %s", errFamilyClash, name)
	}
	f.help, f.counter, f.used = help, counter, true
	return f, nil
}

// AddGathered adds families gathered from a registry (the agent's own
// metrics), encoded by expfmt in format. A family that one of the
// collectors has too is an error (errFamilyClash): use the registry then.
func (t *Text) AddGathered(mfs []*dto.MetricFamily, format expfmt.Format) error {
	var buf strings.Builder
	for _, mf := range mfs {
		if len(mf.Metric) == 0 {
			continue
		}
		f := t.byName[mf.GetName()]
		if f != nil && f.used {
			return fmt.Errorf("%w: %s", errFamilyClash, mf.GetName())
		}
		buf.Reset()
		enc := expfmt.NewEncoder(&buf, format)
		if err := enc.Encode(mf); err != nil {
			return fmt.Errorf("encode %s: %w", mf.GetName(), err)
		}
		if f == nil {
			f = &textFamily{name: mf.GetName()}
			t.byName[f.name] = f
			t.fams = append(t.fams, f)
		}
		f.raw, f.used = append(f.raw[:0], buf.String()...), true
	}
	return nil
}

// WriteTo writes the families with series, in name order.
func (t *Text) WriteTo(w io.Writer) (int64, error) {
	fams := make([]*textFamily, 0, len(t.fams))
	for _, f := range t.fams {
		if f.used && (len(f.raw) > 0 || len(f.lines) > 0) {
			fams = append(fams, f)
		}
	}
	slices.SortFunc(fams, func(a, b *textFamily) int { return strings.Compare(a.name, b.name) })
	var n int64
	var head []byte
	for _, f := range fams {
		if len(f.raw) > 0 {
			m, err := w.Write(f.raw)
			n += int64(m)
			if err != nil {
				return n, err
			}
			continue
		}
		head = appendHeader(head[:0], f)
		m, err := w.Write(head)
		n += int64(m)
		if err != nil {
			return n, err
		}
		m, err = w.Write(f.lines)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// appendHeader appends the HELP and TYPE lines of f, as expfmt writes them.
func appendHeader(b []byte, f *textFamily) []byte {
	if f.help != "" {
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = appendEscaped(b, f.help, false)
		b = append(b, '\n')
	}
	b = append(b, "# TYPE "...)
	b = append(b, f.name...)
	if f.counter {
		b = append(b, " counter\n"...)
	} else {
		b = append(b, " gauge\n"...)
	}
	return b
}

// textSink is an emitter's output into a Text: the text families of a
// collector's family set, by slot.
type textSink struct {
	fams []*textFamily
}

// textSource is a collector that writes into a Text: textSafe reports what
// the registry's checks would reject, collect emits its series.
type textSource interface {
	textSafe() error
	collect(e *emitter)
}

// writeText is the body of the collectors' WriteText: it runs c's checks,
// resolves the families of set in t and emits c's series into them. When
// the checks fail it returns their error and leaves t as it was; when a
// family clashes with one of t's (errFamilyClash) it returns that error and
// emits no series.
func writeText(t *Text, set *familySet, c textSource) error {
	if err := c.textSafe(); err != nil {
		return err
	}
	sink, err := newTextSink(t, set)
	if err != nil {
		return err
	}
	c.collect(&emitter{text: sink})
	return nil
}

// newTextSink resolves the families of set in t.
func newTextSink(t *Text, set *familySet) (*textSink, error) {
	s := &textSink{fams: make([]*textFamily, len(set.families))}
	for i, f := range set.families {
		tf, err := t.family(f.name, f.help, f.counter)
		if err != nil {
			return nil, err
		}
		s.fams[i] = tf
	}
	return s, nil
}

// sample appends one sample line of family f with label block b.
func (s *textSink) sample(f *family, b *labelBlock, v float64) {
	tf := s.fams[f.slot]
	tf.lines = append(tf.lines, f.name...)
	tf.lines = append(tf.lines, b.text...)
	tf.lines = append(tf.lines, ' ')
	tf.lines = appendFloat(tf.lines, v)
	tf.lines = append(tf.lines, '\n')
}

// appendLabelText appends the label block of values in layout l:
// {a="x",b="y"}, labels sorted by name, values escaped as expfmt does;
// nothing when there are no labels.
func appendLabelText(b []byte, l *layout, values []string) []byte {
	if len(l.order) == 0 {
		return b
	}
	b = append(b, '{')
	for k, i := range l.order {
		if k > 0 {
			b = append(b, ',')
		}
		var name, value string
		if i >= 0 {
			name, value = l.vars[i], values[i]
		} else {
			name, value = l.consts[-i-1].name, l.consts[-i-1].value
		}
		b = append(b, name...)
		b = append(b, '=', '"')
		b = appendEscaped(b, value, true)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendEscaped appends s with backslash and newline escaped, and double
// quotes too in a label value (expfmt's escaping of help and label values).
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '"' && quote:
			b = append(b, '\\', '"')
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat appends v as expfmt writes a sample value.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case v == 1:
		return append(b, '1')
	case v == 0:
		return append(b, '0')
	case v == -1:
		return append(b, '-', '1')
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, +1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// TextFormat reports whether format is the text format (any escaping
// scheme): the one Text writes. Every metric and label name poolwatch
// writes is a valid legacy name, which no escaping scheme changes.
func TextFormat(format expfmt.Format) bool {
	return format.FormatType() == expfmt.TypeTextPlain
}

// validLabelValue is the registry's check of a label value.
func validLabelValue(v string) bool { return utf8.ValidString(v) }

// validLegacyName reports whether a static label name needs no escaping.
func validLegacyName(n string) bool { return model.LegacyValidation.IsValidLabelName(n) }
