package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	promconfig "github.com/prometheus/common/config"
	"go.yaml.in/yaml/v3"
)

// Compiled regular expressions are the package's only package-level state.
// identRE (errors.go) matches label names and environment variable names.
var (
	yamlLineRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	targetNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.:-]+$`)
)

// loc is where a key and its value were written (1-based lines).
type loc struct{ key, val int }

// parser decodes one file. It is used once, by one goroutine.
type parser struct {
	file string
	dir  string         // of file: the base of relative paths
	at   map[string]loc // every key written in the file, by YAML path

	// What parse decoded besides the targets (probe.go): the defaults as
	// written (before derive), the auth modules and the probe section.
	defaults Target
	modules  map[string]AuthModule
	probe    Probe
}

func newParser(file string) *parser {
	return &parser{file: file, dir: filepath.Dir(file), at: map[string]loc{}}
}

func (p *parser) errorf(line int, path, format string, args ...any) *Error {
	return &Error{File: p.file, Line: max(line, 1), Path: path, Msg: fmt.Sprintf(format, args...)}
}

// document is the file's root mapping; its values are decoded later, the
// targets over the defaults.
type document struct {
	Defaults    *yaml.Node `yaml:"defaults"`
	Targets     *yaml.Node `yaml:"targets"`
	AuthModules *yaml.Node `yaml:"auth_modules"`
	Probe       *yaml.Node `yaml:"probe"`
}

// parse decodes data strictly into targets, each decoded over a copy of the
// defaults (itself decoded over the built-in defaults), so that a target
// inherits every key it does not set, mappings merging key by key; then
// validates them (resolve.go).
func (p *parser) parse(data []byte) ([]Target, error) {
	root, err := p.root(data)
	if err != nil {
		return nil, err
	}
	if root.Kind != yaml.MappingNode {
		return nil, p.errorf(root.Line, RootPath, "the configuration must be a mapping with the keys defaults and targets, not %s", kindName(root))
	}
	var doc document
	var base Target
	if err := p.mapping(reflect.ValueOf(&doc).Elem(), root, root.Line, RootPath, false); err != nil {
		return nil, err
	}
	if err := p.builtin(reflect.ValueOf(&base).Elem()); err != nil {
		return nil, err
	}
	if doc.Defaults != nil {
		if err := p.value(reflect.ValueOf(&base).Elem(), doc.Defaults, p.at["defaults"].val, "defaults", `keys:"shared"`); err != nil {
			return nil, err
		}
	}
	var targets []Target
	if doc.Targets != nil {
		err := p.list(doc.Targets, p.at["targets"].val, "targets", "a target", func(item *yaml.Node, line int, path string) error {
			t := base.clone()
			targets = append(targets, t)
			return p.mapping(reflect.ValueOf(&targets[len(targets)-1]).Elem(), item, line, path, false)
		})
		if err != nil {
			return nil, err
		}
	}
	if doc.AuthModules != nil {
		if err := p.value(reflect.ValueOf(&p.modules).Elem(), doc.AuthModules, p.at["auth_modules"].val, "auth_modules", ""); err != nil {
			return nil, err
		}
	}
	if err := p.builtin(reflect.ValueOf(&p.probe).Elem()); err != nil {
		return nil, err
	}
	if doc.Probe != nil {
		if err := p.value(reflect.ValueOf(&p.probe).Elem(), doc.Probe, p.at["probe"].val, "probe", ""); err != nil {
			return nil, err
		}
	}
	if l, ok := p.at["targets"]; ok {
		root.Line = l.key
	}
	return p.resolve(base, targets, root.Line)
}

// builtin sets v's fields to the built-in defaults in their `default` tags.
func (p *parser) builtin(v reflect.Value) error {
	for _, f := range fieldsOf(v.Type(), false) {
		fv := v.FieldByIndex(f.index)
		if def, ok := f.tag.Lookup("default"); ok {
			if err := p.value(fv, &yaml.Node{Kind: yaml.ScalarNode, Value: def}, 0, "built-in default of "+f.key, f.tag); err != nil {
				return err
			}
		} else if fv.Kind() == reflect.Struct {
			if err := p.builtin(fv); err != nil {
				return err
			}
		}
	}
	return nil
}

// field is a key of a struct: the field at index (through inlined structs)
// and its tags.
type field struct {
	key   string
	index []int
	tag   reflect.StructTag
}

// fieldsOf returns the keys of struct type t in field order; shared leaves
// out the fields tagged only:"target".
func fieldsOf(t reflect.Type, shared bool) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		key, opt, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case shared && f.Tag.Get("only") == "target":
		case opt == "inline":
			for _, sub := range fieldsOf(f.Type, shared) {
				sub.index = append([]int{i}, sub.index...)
				out = append(out, sub)
			}
		case key != "":
			out = append(out, field{key: key, index: []int{i}, tag: f.Tag})
		}
	}
	return out
}

// mapping decodes the mapping n, written at line, into the struct v, key by
// key: keys absent from n keep v's value; a key tagged check:"required" must
// be present.
func (p *parser) mapping(v reflect.Value, n *yaml.Node, line int, path string, shared bool) error {
	fields := fieldsOf(v.Type(), shared)
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	err := p.pairs(n, path, keys, func(key, kpath string, _, vn *yaml.Node) error {
		f := fields[slices.Index(keys, key)]
		return p.value(v.FieldByIndex(f.index), deref(vn), vn.Line, kpath, f.tag)
	})
	for _, f := range fields {
		if _, ok := p.at[joinKey(path, f.key)]; err == nil && !ok && slices.Contains(checks(f.tag), "required") {
			err = p.errorf(line, joinKey(path, f.key), "missing required key")
		}
	}
	return err
}

func checks(tag reflect.StructTag) []string { return strings.Split(tag.Get("check"), ",") }

// pairs calls each for the pairs of mapping n in order, after recording
// where each was written. known lists the allowed keys; nil allows any key.
// Duplicate keys, unknown keys, merge keys and non-string keys are errors.
func (p *parser) pairs(n *yaml.Node, path string, known []string, each func(key, kpath string, kn, vn *yaml.Node) error) error {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		k := deref(kn)
		switch {
		case k == nil || k.Kind != yaml.ScalarNode || isNull(k):
			return p.errorf(kn.Line, path, "keys must be strings, found %s key", kindName(kn))
		case k.ShortTag() == "!!merge":
			return p.errorf(kn.Line, path, "YAML merge keys (<<) are not supported")
		}
		kpath := joinKey(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			return p.errorf(kn.Line, kpath, "duplicate key (first defined at line %d)", first)
		}
		seen[k.Value] = kn.Line
		if known != nil && !slices.Contains(known, k.Value) {
			return p.errorf(kn.Line, kpath, "unknown key; valid keys here: %s", strings.Join(known, ", "))
		}
		if deref(vn) == nil {
			return p.errorf(vn.Line, kpath, "unsupported YAML value")
		}
		p.at[kpath] = loc{key: kn.Line, val: vn.Line}
		if err := each(k.Value, kpath, kn, vn); err != nil {
			return err
		}
	}
	return nil
}

// list calls each for the items of the list n (null is empty), which must be
// mappings (a noun, such as "a target", names one in errors).
func (p *parser) list(n *yaml.Node, line int, path, noun string, each func(item *yaml.Node, line int, path string) error) error {
	return p.items(n, line, path, func(item *yaml.Node, line int, path string) error {
		if item.Kind != yaml.MappingNode {
			return p.errorf(line, path, "%s must be a mapping, not %s", noun, kindName(item))
		}
		return each(item, line, path)
	})
}

// items calls each for the items of the list n (null is empty; written at
// line), in order, with each item's aliases resolved, its line and its path,
// and records where the item is written. It stops at the first error: n not
// a list, an item that resolves to nothing, or each's.
func (p *parser) items(n *yaml.Node, line int, path string, each func(item *yaml.Node, line int, path string) error) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return p.errorf(line, path, "must be a list, not %s", kindName(n))
	}
	for i, in := range n.Content {
		item, ipath := deref(in), joinIndex(path, i)
		p.at[ipath] = loc{key: in.Line, val: in.Line}
		if item == nil {
			return p.errorf(in.Line, path, "unsupported YAML value")
		}
		if err := each(item, in.Line, ipath); err != nil {
			return err
		}
	}
	return nil
}

// value decodes n (aliases resolved; written at line) into v, applying the
// rules of the field's `check` tag.
func (p *parser) value(v reflect.Value, n *yaml.Node, line int, path string, tag reflect.StructTag) error {
	checks := checks(tag)
	switch {
	case v.Type() == reflect.TypeFor[*yaml.Node]():
		v.Set(reflect.ValueOf(n))
		return nil
	case v.Type() == reflect.TypeFor[promconfig.HTTPClientConfig]():
		return p.decodeHTTPClient(v.Addr().Interface().(*promconfig.HTTPClientConfig), n, line, path) //nolint:forcetypeassert // checked by the case
	case v.Kind() == reflect.Struct || v.Kind() == reflect.Map:
		if isNull(n) {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return p.errorf(line, path, "must be a mapping, not %s", kindName(n))
		}
		if v.Kind() == reflect.Struct {
			return p.mapping(v, n, line, path, tag.Get("keys") == "shared")
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		return p.pairs(n, path, nil, func(key, kpath string, kn, vn *yaml.Node) error {
			if slices.Contains(checks, "labels") {
				if err := p.labelName(key, kpath, kn.Line); err != nil {
					return err
				}
			}
			e := reflect.New(v.Type().Elem()).Elem()
			err := p.value(e, deref(vn), vn.Line, kpath, "")
			v.SetMapIndex(reflect.ValueOf(key), e)
			return err
		})
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		return p.scalars(v, n, line, path, tag)
	case v.Kind() == reflect.Slice:
		v.SetLen(0)
		return p.list(n, line, path, tag.Get("item"), func(item *yaml.Node, iline int, ipath string) error {
			e := reflect.New(v.Type().Elem()).Elem()
			err := p.mapping(e, item, iline, ipath, false)
			v.Set(reflect.Append(v, e))
			return err
		})
	case v.Kind() == reflect.Pointer:
		e := reflect.New(v.Type().Elem())
		v.Set(e)
		return p.value(e.Elem(), n, line, path, tag)
	case n.Kind != yaml.ScalarNode:
		return p.errorf(line, path, "must be a single value, not %s", kindName(n))
	case isNull(n) && slices.Contains(checks, "nullable"):
		v.SetZero()
		return nil
	case isNull(n):
		return p.errorf(line, path, "missing value")
	}
	s, positive := n.Value, slices.Contains(checks, "positive")
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		d, err := time.ParseDuration(s)
		switch {
		case err != nil:
			return p.errorf(line, path, "invalid duration %q: use a number with a unit, such as 500ms, 5s, 2m or 1h30m", s)
		case d < 0:
			return p.errorf(line, path, "must not be negative, got %s", s)
		case d == 0 && positive:
			return p.errorf(line, path, "must be greater than 0")
		case d%time.Millisecond != 0 && slices.Contains(checks, "ms"):
			return p.errorf(line, path, "must be a whole number of milliseconds, got %s", s)
		}
		v.SetInt(int64(d))
	case v.Type() == reflect.TypeFor[ByteSize]():
		b, ok := parseByteSize(s)
		switch {
		case !ok:
			return p.errorf(line, path, "invalid size %q: use a whole number of bytes with an optional unit, such as 512KiB, 10MiB or 1GiB", s)
		case b == 0 && positive:
			return p.errorf(line, path, "must be greater than 0")
		}
		v.SetInt(int64(b))
	case v.Kind() == reflect.String:
		if s == "" && slices.Contains(checks, "nonempty") {
			return p.errorf(line, path, "must not be empty%s", tag.Get("hint"))
		}
		if s != "" && slices.Contains(checks, "path") && !filepath.IsAbs(s) {
			s = filepath.Join(p.dir, s)
		}
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		var b bool
		if n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			return p.errorf(line, path, "must be true or false, not %q", s)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int:
		var i int64
		switch {
		case n.ShortTag() != "!!int" || n.Decode(&i) != nil:
			return p.errorf(line, path, "must be an integer, not %q", s)
		case i < 0:
			return p.errorf(line, path, "must not be negative, got %d", i)
		case i == 0 && positive:
			return p.errorf(line, path, "must be at least 1, got 0")
		case i > math.MaxInt32:
			return p.errorf(line, path, "must be at most %d, got %d", math.MaxInt32, i)
		}
		v.SetInt(i)
	default:
		return p.errorf(line, path, "internal error: cannot decode into %s", v.Type())
	}
	return nil
}

// scalars decodes the list n (null is empty) of single values into the
// slice v, each checked by the field's tag.
func (p *parser) scalars(v reflect.Value, n *yaml.Node, line int, path string, tag reflect.StructTag) error {
	v.SetLen(0)
	return p.items(n, line, path, func(item *yaml.Node, line int, path string) error {
		e := reflect.New(v.Type().Elem()).Elem()
		if err := p.value(e, item, line, path, tag); err != nil {
			return err
		}
		v.Set(reflect.Append(v, e))
		return nil
	})
}

// labelName checks the name of a static label.
func (p *parser) labelName(name, path string, line int) error {
	switch {
	case !identRE.MatchString(name):
		return p.errorf(line, path, "invalid label name %q: use letters, digits and _, not starting with a digit", name)
	case strings.HasPrefix(name, "__"):
		return p.errorf(line, path, "label names starting with __ are reserved for internal use")
	case slices.Contains(ReservedLabels(), name):
		return p.errorf(line, path, "label %q is reserved: poolwatch or Prometheus sets it (reserved: %s)", name, strings.Join(ReservedLabels(), ", "))
	}
	return nil
}

// deref follows aliases.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 64; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "null"
	case n.Kind == yaml.ScalarNode:
		return "a scalar"
	default:
		return "an unsupported YAML node"
	}
}

// root parses data into the root node of its one YAML document.
func (p *parser) root(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, next yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, p.errorf(1, RootPath, "the file is empty")
	} else if err != nil {
		return nil, p.syntaxError(data, err)
	}
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, p.syntaxError(data, err)
	default:
		return nil, p.errorf(next.Line, RootPath, "the file has more than one YAML document: put the whole configuration in one")
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = deref(doc.Content[0])
	}
	if root == nil || root.Kind == yaml.DocumentNode || isNull(root) {
		return nil, p.errorf(doc.Line, RootPath, "the file is empty")
	}
	return root, nil
}

// syntaxError locates a YAML syntax error. The parser often reports the line
// where the enclosing block started rather than the line of the problem, so
// the line is the first one L such that the file cut after line L fails with
// the same message. L is found by binary search (O(n log n)), which assumes
// that every longer cut fails the same way: true from the problem on, since
// the parser reads forward.
func (p *parser) syntaxError(data []byte, err error) *Error {
	msg := yamlMessage(err)
	lo, hi := 1, bytes.Count(data, []byte("\n"))+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if yamlMessage(parseAll(cutLines(data, mid))) == msg {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return p.errorf(lo, RootPath, "invalid YAML: %s", msg)
}

// yamlMessage returns err's message without "yaml: line N: ", or "" for nil.
func yamlMessage(err error) string {
	if err == nil {
		return ""
	}
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		return m[2]
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// cutLines returns the first n lines of data.
func cutLines(data []byte, n int) []byte {
	end := 0
	for ; n > 0 && end < len(data); n-- {
		if i := bytes.IndexByte(data[end:], '\n'); i >= 0 {
			end += i + 1
		} else {
			end = len(data)
		}
	}
	return data[:end]
}

// parseAll parses every YAML document in data and returns the first error.
func parseAll(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}
