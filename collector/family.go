package collector

import (
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// family is one metric family of a collector, with everything both of its
// outputs need: the descriptor of Collect's metrics and, for the text
// exposition (Text), its name, help, type and the layout of its labels.
type family struct {
	desc    *prometheus.Desc
	name    string
	help    string
	counter bool
	layout  *layout
	// slot is the family's index in its familySet.
	slot int
}

// layout is how the label pairs of a family's series are ordered: the
// static (constant) labels and the variable ones merged and sorted by name,
// as client_golang orders them. Families with the same labels share one
// layout, so a pool's label pairs, and its text label block, are built once
// for all its families (emitter).
type layout struct {
	consts []constLabel // sorted by name
	vars   []string     // variable label names, in the order values come
	// order lists the label positions sorted by name: i >= 0 is vars[i],
	// i < 0 is consts[-i-1].
	order []int
	// constPairs are the label pairs of consts, shared by every series.
	constPairs []*dto.LabelPair
}

type constLabel struct{ name, value string }

// familySet is the families of one collector: it assigns their slots and
// interns their layouts. It is built once per collector, before use, and
// only read afterwards.
type familySet struct {
	families []*family
	layouts  map[string]*layout
}

func newFamilySet() *familySet { return &familySet{layouts: map[string]*layout{}} }

// add returns a new family of the set. static are the constant labels.
func (s *familySet) add(name, help string, counter bool, vars []string, static map[string]string) *family {
	f := &family{
		desc:    prometheus.NewDesc(name, help, vars, prometheus.Labels(static)),
		name:    name,
		help:    help,
		counter: counter,
		layout:  s.layout(vars, static),
		slot:    len(s.families),
	}
	s.families = append(s.families, f)
	return f
}

// layout returns the interned layout of these labels.
func (s *familySet) layout(vars []string, static map[string]string) *layout {
	var key strings.Builder
	for _, v := range vars {
		key.WriteString(v)
		key.WriteByte(0)
	}
	key.WriteByte(1)
	key.WriteString(labelsKey(static))
	if l, ok := s.layouts[key.String()]; ok {
		return l
	}
	l := &layout{vars: vars}
	for _, n := range slices.Sorted(maps.Keys(static)) {
		l.consts = append(l.consts, constLabel{name: n, value: static[n]})
		name, value := n, static[n]
		l.constPairs = append(l.constPairs, &dto.LabelPair{Name: &name, Value: &value})
	}
	for i := range vars {
		l.order = append(l.order, i)
	}
	for i := range l.consts {
		l.order = append(l.order, -i-1)
	}
	sort.Slice(l.order, func(a, b int) bool { return l.labelName(l.order[a]) < l.labelName(l.order[b]) })
	s.layouts[key.String()] = l
	return l
}

// labelName is the name of label position i (see layout.order).
func (l *layout) labelName(i int) string {
	if i >= 0 {
		return l.vars[i]
	}
	return l.consts[-i-1].name
}

// labelBlock is a layout's label pairs for one set of values, built once
// and reused by every series with the same labels: a pool's, a database's.
type labelBlock struct {
	values []string // the variable values it was built for
	// pairs for Collect, text for Text ({a="x",b="y"}, "" without labels).
	pairs []*dto.LabelPair
	text  []byte
}

// matches reports whether the block was built for values.
func (b *labelBlock) matches(values []string) bool {
	if len(b.values) != len(values) {
		return false
	}
	for i, v := range values {
		if b.values[i] != v {
			return false
		}
	}
	return true
}

// emitter receives a collector's series and turns them into Collect's
// metrics (ch) or into text exposition lines (text). It remembers the last
// label block of each layout: a collector sends the series of one pool (or
// database) one after the other, so their labels are built once. Not safe
// for concurrent use.
type emitter struct {
	ch   chan<- prometheus.Metric
	text *textSink
	// last is the layout of the previous series and block its labels;
	// blocks keeps the last block of every layout seen.
	last   *layout
	block  *labelBlock
	blocks map[*layout]*labelBlock
}

func (e *emitter) gauge(f *family, v float64, values ...string) { e.emit(f, v, values) }

func (e *emitter) counter(f *family, v float64, values ...string) { e.emit(f, v, values) }

func (e *emitter) emit(f *family, v float64, values []string) {
	b := e.blockFor(f.layout, values)
	if e.text != nil {
		e.text.sample(f, b, v)
		return
	}
	e.ch <- &constMetric{desc: f.desc, pairs: b.pairs, value: v, counter: f.counter}
}

// blockFor returns the label block of values in layout l, building it when
// it is not the last one of l.
func (e *emitter) blockFor(l *layout, values []string) *labelBlock {
	if l != e.last {
		if e.blocks == nil {
			e.blocks = map[*layout]*labelBlock{}
		}
		b := e.blocks[l]
		if b == nil {
			b = &labelBlock{}
			e.blocks[l] = b
		}
		e.last, e.block = l, b
	}
	b := e.block
	if b.values != nil && b.matches(values) {
		return b
	}
	if e.text != nil {
		// The text is copied into the output: the block's buffer is reused.
		b.values = append(b.values[:0], values...)
		b.text = appendLabelText(b.text[:0], l, values)
		return b
	}
	// Collect's metrics keep their pairs: a new block each time.
	nb := &labelBlock{values: slices.Clone(values)}
	nb.pairs = labelPairs(l, nb.values)
	e.blocks[l], e.block = nb, nb
	return nb
}

// labelPairs returns the label pairs of values in layout l, sorted by name.
// They point into values, which must not change afterwards.
func labelPairs(l *layout, values []string) []*dto.LabelPair {
	pairs := make([]*dto.LabelPair, len(l.order))
	vars := make([]dto.LabelPair, len(l.vars))
	for k, i := range l.order {
		if i < 0 {
			pairs[k] = l.constPairs[-i-1]
			continue
		}
		vars[i].Name, vars[i].Value = &l.vars[i], &values[i]
		pairs[k] = &vars[i]
	}
	return pairs
}

// constMetric is a const metric whose label pairs are shared with the
// other series of the same pool (labelBlock): client_golang's
// MustNewConstMetric builds and sorts them for every series. Metrics are
// read-only once sent, as client_golang requires of Write's output.
type constMetric struct {
	desc    *prometheus.Desc
	pairs   []*dto.LabelPair
	value   float64
	counter bool
}

func (m *constMetric) Desc() *prometheus.Desc { return m.desc }

func (m *constMetric) Write(out *dto.Metric) error {
	out.Label = m.pairs
	if m.counter {
		out.Counter = &dto.Counter{Value: &m.value}
	} else {
		out.Gauge = &dto.Gauge{Value: &m.value}
	}
	return nil
}
