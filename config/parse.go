package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The levels a setting can come from, least specific first.
const (
	levelBuiltin = iota
	levelDefaults
	levelTarget
)

// opt is one setting as written (or built in), with where it was written.
type opt[T any] struct {
	val   T
	set   bool
	level int
	line  int
	path  string
}

// over returns o if it is set, else base: o overrides base.
func (o opt[T]) over(base opt[T]) opt[T] {
	if o.set {
		return o
	}
	return base
}

// builtin returns a built-in default.
func builtin[T any](v T, path string) opt[T] {
	return opt[T]{val: v, set: true, level: levelBuiltin, path: path}
}

// where describes where o was set, for messages that refer to a second key.
func (o opt[T]) where() string {
	if o.level == levelBuiltin {
		return "built-in default"
	}
	return fmt.Sprintf("%s, line %d", o.path, o.line)
}

// layer holds the keys that defaults and targets share.
type layer struct {
	scrapeTimeout     opt[time.Duration]
	minScrapeInterval opt[time.Duration]
	leakThreshold     opt[time.Duration]
	sessionModeLeaks  opt[bool]
	maxPools          opt[int]
	labels            []labelOpt
	tls               tlsLayer
	probe             probeLayer
}

type labelOpt struct {
	name, value string
	level, line int
	path        string
}

type tlsLayer struct {
	caFile, certFile, keyFile opt[string]
}

type probeLayer struct {
	minConnections, maxConnections, acquireRetries opt[int]
	connectTimeout, healthCheckTimeout             opt[time.Duration]
	retryBackoff, leakThreshold, idleClose         opt[time.Duration]
	statementTimeout, lockTimeout                  opt[time.Duration]
}

// over merges l over base key by key; labels are merged by name.
func (l layer) over(base layer) layer {
	return layer{
		scrapeTimeout:     l.scrapeTimeout.over(base.scrapeTimeout),
		minScrapeInterval: l.minScrapeInterval.over(base.minScrapeInterval),
		leakThreshold:     l.leakThreshold.over(base.leakThreshold),
		sessionModeLeaks:  l.sessionModeLeaks.over(base.sessionModeLeaks),
		maxPools:          l.maxPools.over(base.maxPools),
		labels:            append(append([]labelOpt(nil), base.labels...), l.labels...),
		tls: tlsLayer{
			caFile:   l.tls.caFile.over(base.tls.caFile),
			certFile: l.tls.certFile.over(base.tls.certFile),
			keyFile:  l.tls.keyFile.over(base.tls.keyFile),
		},
		probe: probeLayer{
			minConnections:     l.probe.minConnections.over(base.probe.minConnections),
			maxConnections:     l.probe.maxConnections.over(base.probe.maxConnections),
			acquireRetries:     l.probe.acquireRetries.over(base.probe.acquireRetries),
			connectTimeout:     l.probe.connectTimeout.over(base.probe.connectTimeout),
			healthCheckTimeout: l.probe.healthCheckTimeout.over(base.probe.healthCheckTimeout),
			retryBackoff:       l.probe.retryBackoff.over(base.probe.retryBackoff),
			leakThreshold:      l.probe.leakThreshold.over(base.probe.leakThreshold),
			idleClose:          l.probe.idleClose.over(base.probe.idleClose),
			statementTimeout:   l.probe.statementTimeout.over(base.probe.statementTimeout),
			lockTimeout:        l.probe.lockTimeout.over(base.probe.lockTimeout),
		},
	}
}

// builtinLayer holds the built-in defaults. connect_timeout,
// health_check_timeout and statement_timeout have none: they derive from the
// scrape timeout (see resolveTarget).
func builtinLayer() layer {
	return layer{
		scrapeTimeout:     builtin(5*time.Second, "scrape_timeout"),
		minScrapeInterval: builtin(time.Duration(0), "min_scrape_interval"),
		leakThreshold:     builtin(5*time.Minute, "leak_threshold"),
		sessionModeLeaks:  builtin(false, "session_mode_leaks"),
		maxPools:          builtin(1000, "max_pools"),
		tls: tlsLayer{
			caFile:   builtin("", "tls.ca_file"),
			certFile: builtin("", "tls.cert_file"),
			keyFile:  builtin("", "tls.key_file"),
		},
		probe: probeLayer{
			minConnections: builtin(0, "probe_pool.min_connections"),
			maxConnections: builtin(2, "probe_pool.max_connections"),
			acquireRetries: builtin(3, "probe_pool.acquire_retries"),
			retryBackoff:   builtin(100*time.Millisecond, "probe_pool.retry_backoff"),
			leakThreshold:  builtin(30*time.Second, "probe_pool.leak_threshold"),
			idleClose:      builtin(10*time.Minute, "probe_pool.idle_close"),
			lockTimeout:    builtin(time.Second, "probe_pool.lock_timeout"),
		},
	}
}

// targetSpec is one item of targets as written.
type targetSpec struct {
	path             string
	line             int
	name, kind, dsn  opt[string]
	passwordFile     opt[string]
	passwordEnv      opt[string]
	applicationPools opt[[]appPoolSpec]
	layer            layer
}

type appPoolSpec struct {
	path                                  string
	line                                  int
	name, applicationName, user, database opt[string]
	minConnections, maxConnections        opt[int]
}

// document is the whole file as written.
type document struct {
	defaults    layer
	targets     []targetSpec
	targetsLine int
}

// The keys allowed in each mapping.
func rootKeys() []string { return []string{"defaults", "targets"} }

func layerKeys() []string {
	return []string{"scrape_timeout", "min_scrape_interval", "leak_threshold", "session_mode_leaks", "max_pools", "labels", "tls", "probe_pool"}
}

func targetKeys() []string {
	return append([]string{"name", "kind", "dsn", "password_file", "password_env", "application_pools"}, layerKeys()...)
}

func tlsKeys() []string { return []string{"ca_file", "cert_file", "key_file"} }

func probeKeys() []string {
	return []string{"min_connections", "max_connections", "connect_timeout", "health_check_timeout", "acquire_retries", "retry_backoff", "leak_threshold", "idle_close", "statement_timeout", "lock_timeout"}
}

func appPoolKeys() []string {
	return []string{"name", "application_name", "user", "database", "min_connections", "max_connections"}
}

// Compiled regular expressions are the package's only package-level state.
var (
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	yamlLineRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	targetNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.:-]+$`)
	envNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// parser turns YAML into a document and a document into targets. It records
// the file name for errors.
type parser struct {
	file string
}

func (p *parser) errorf(line int, path, format string, args ...any) *Error {
	if line < 1 {
		line = 1
	}
	return &Error{File: p.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// field is one key: value pair of a mapping.
type field struct {
	key   string
	path  string
	line  int        // of the key
	val   *yaml.Node // aliases resolved
	vline int        // of the value as written
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
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "null"
		}
		return "a scalar"
	default:
		return "an unsupported YAML node"
	}
}

// document parses the YAML of the whole file.
func (p *parser) document(data []byte) (*document, error) {
	root, err := p.decode(data)
	if err != nil {
		return nil, err
	}
	if root.Kind != yaml.MappingNode {
		return nil, p.errorf(root.Line, RootPath, "the configuration must be a mapping with the keys defaults and targets, not %s", kindName(root))
	}
	fields, err := p.fields(root, RootPath, rootKeys())
	if err != nil {
		return nil, err
	}
	doc := &document{targetsLine: root.Line}
	for _, f := range fields {
		switch f.key {
		case "defaults":
			m, err := p.mapping(f, layerKeys())
			if err != nil {
				return nil, err
			}
			for _, g := range m {
				if err := p.layerKey(g, levelDefaults, &doc.defaults); err != nil {
					return nil, err
				}
			}
		case "targets":
			doc.targetsLine = f.line
			items, err := p.sequence(f)
			if err != nil {
				return nil, err
			}
			for i, item := range items {
				t, err := p.target(item, joinIndex(f.path, i))
				if err != nil {
					return nil, err
				}
				doc.targets = append(doc.targets, t)
			}
		}
	}
	return doc, nil
}

// decode parses data into the root node of its one YAML document.
func (p *parser) decode(data []byte) (root *yaml.Node, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, p.errorf(1, RootPath, "the file is empty")
		}
		return nil, p.syntaxError(data, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, p.syntaxError(data, err)
	default:
		return nil, p.errorf(next.Line, RootPath, "the file has more than one YAML document: put the whole configuration in one")
	}
	root = &doc
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, p.errorf(doc.Line, RootPath, "the file is empty")
		}
		root = doc.Content[0]
	}
	root = deref(root)
	if root == nil || isNull(root) {
		return nil, p.errorf(doc.Line, RootPath, "the file is empty")
	}
	return root, nil
}

func (p *parser) syntaxError(data []byte, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if l := problemLine(data, msg); l > 0 {
		line = l
	}
	return p.errorf(line, RootPath, "invalid YAML: %s", msg)
}

// maxProblemLineSearch bounds the size, in lines, of a file that
// problemLine searches.
const maxProblemLineSearch = 2000

// problemLine returns the first line L such that the file cut after line L
// fails to parse with the same message as the whole file, or 0 if there is
// none. The YAML parser often reports the line where the enclosing block
// started rather than the line of the problem; this finds the latter.
func problemLine(data []byte, msg string) int {
	if bytes.Count(data, []byte("\n")) > maxProblemLineSearch {
		return 0
	}
	for end, line := 0, 1; end < len(data); line++ {
		next := bytes.IndexByte(data[end:], '\n')
		if next < 0 {
			end = len(data)
		} else {
			end += next + 1
		}
		if prefixErr := parseAll(data[:end]); prefixErr != nil {
			m := strings.TrimPrefix(prefixErr.Error(), "yaml: ")
			if sub := yamlLineRE.FindStringSubmatch(prefixErr.Error()); sub != nil {
				m = sub[2]
			}
			if m == msg {
				return line
			}
		}
	}
	return 0
}

// parseAll parses every YAML document in data and returns the first error.
func parseAll(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// fields returns the pairs of mapping n in order. known lists the allowed
// keys; nil allows any key. Duplicate keys, unknown keys, merge keys and
// non-string keys are errors.
func (p *parser) fields(n *yaml.Node, path string, known []string) ([]field, error) {
	out := make([]field, 0, len(n.Content)/2)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		k := deref(kn)
		if k == nil || k.Kind != yaml.ScalarNode || isNull(k) {
			return nil, p.errorf(kn.Line, path, "keys must be strings, found %s key", kindName(kn))
		}
		if k.ShortTag() == "!!merge" {
			return nil, p.errorf(kn.Line, path, "YAML merge keys (<<) are not supported")
		}
		fpath := joinKey(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			return nil, p.errorf(kn.Line, fpath, "duplicate key (first defined at line %d)", first)
		}
		seen[k.Value] = kn.Line
		if known != nil && !contains(known, k.Value) {
			return nil, p.errorf(kn.Line, fpath, "unknown key; valid keys here: %s", strings.Join(known, ", "))
		}
		v := deref(vn)
		if v == nil {
			return nil, p.errorf(vn.Line, fpath, "unsupported YAML value")
		}
		out = append(out, field{key: k.Value, path: fpath, line: kn.Line, val: v, vline: vn.Line})
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// mapping returns the fields of the mapping in f's value; null is empty.
func (p *parser) mapping(f field, known []string) ([]field, error) {
	if isNull(f.val) {
		return nil, nil
	}
	if f.val.Kind != yaml.MappingNode {
		return nil, p.errorf(f.vline, f.path, "must be a mapping, not %s", kindName(f.val))
	}
	return p.fields(f.val, f.path, known)
}

// sequence returns the items of the list in f's value, aliases resolved;
// null is empty.
func (p *parser) sequence(f field) ([]item, error) {
	if isNull(f.val) {
		return nil, nil
	}
	if f.val.Kind != yaml.SequenceNode {
		return nil, p.errorf(f.vline, f.path, "must be a list, not %s", kindName(f.val))
	}
	out := make([]item, 0, len(f.val.Content))
	for _, n := range f.val.Content {
		v := deref(n)
		if v == nil {
			return nil, p.errorf(n.Line, f.path, "unsupported YAML value")
		}
		out = append(out, item{node: v, line: n.Line})
	}
	return out, nil
}

type item struct {
	node *yaml.Node
	line int
}

// scalar returns the value of a scalar that must not be null.
func (p *parser) scalar(f field) (string, error) {
	if f.val.Kind != yaml.ScalarNode {
		return "", p.errorf(f.vline, f.path, "must be a single value, not %s", kindName(f.val))
	}
	if isNull(f.val) {
		return "", p.errorf(f.vline, f.path, "missing value")
	}
	return f.val.Value, nil
}

func (p *parser) str(f field, level int) (opt[string], error) {
	s, err := p.scalar(f)
	if err != nil {
		return opt[string]{}, err
	}
	return opt[string]{val: s, set: true, level: level, line: f.vline, path: f.path}, nil
}

func (p *parser) boolean(f field, level int) (opt[bool], error) {
	if _, err := p.scalar(f); err != nil {
		return opt[bool]{}, err
	}
	var b bool
	if f.val.ShortTag() != "!!bool" || f.val.Decode(&b) != nil {
		return opt[bool]{}, p.errorf(f.vline, f.path, "must be true or false, not %q", f.val.Value)
	}
	return opt[bool]{val: b, set: true, level: level, line: f.vline, path: f.path}, nil
}

// integer parses an int in [min, math.MaxInt32].
func (p *parser) integer(f field, level int, minimum int64) (opt[int], error) {
	if _, err := p.scalar(f); err != nil {
		return opt[int]{}, err
	}
	var n int64
	if f.val.ShortTag() != "!!int" || f.val.Decode(&n) != nil {
		return opt[int]{}, p.errorf(f.vline, f.path, "must be an integer, not %q", f.val.Value)
	}
	switch {
	case n < 0 && minimum >= 0:
		return opt[int]{}, p.errorf(f.vline, f.path, "must not be negative, got %d", n)
	case n < minimum:
		return opt[int]{}, p.errorf(f.vline, f.path, "must be at least %d, got %d", minimum, n)
	case n > math.MaxInt32:
		return opt[int]{}, p.errorf(f.vline, f.path, "must be at most %d, got %d", math.MaxInt32, n)
	}
	return opt[int]{val: int(n), set: true, level: level, line: f.vline, path: f.path}, nil
}

// durRule says which durations a key accepts.
type durRule int

const (
	durNonNegative durRule = iota // >= 0
	durPositive                   // > 0
	durMillis                     // >= 0 and whole milliseconds (sent to PostgreSQL in ms)
)

func (p *parser) duration(f field, level int, rule durRule) (opt[time.Duration], error) {
	s, err := p.scalar(f)
	if err != nil {
		return opt[time.Duration]{}, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return opt[time.Duration]{}, p.errorf(f.vline, f.path, "invalid duration %q: use a number with a unit, such as 500ms, 5s, 2m or 1h30m", s)
	}
	switch {
	case d < 0:
		return opt[time.Duration]{}, p.errorf(f.vline, f.path, "must not be negative, got %s", s)
	case d == 0 && rule == durPositive:
		return opt[time.Duration]{}, p.errorf(f.vline, f.path, "must be greater than 0")
	case rule == durMillis && d%time.Millisecond != 0:
		return opt[time.Duration]{}, p.errorf(f.vline, f.path, "must be a whole number of milliseconds, got %s", s)
	}
	return opt[time.Duration]{val: d, set: true, level: level, line: f.vline, path: f.path}, nil
}

// layerKey parses one of the keys shared by defaults and targets into l.
func (p *parser) layerKey(f field, level int, l *layer) error {
	var err error
	switch f.key {
	case "scrape_timeout":
		l.scrapeTimeout, err = p.duration(f, level, durPositive)
	case "min_scrape_interval":
		l.minScrapeInterval, err = p.duration(f, level, durNonNegative)
	case "leak_threshold":
		l.leakThreshold, err = p.duration(f, level, durPositive)
	case "session_mode_leaks":
		l.sessionModeLeaks, err = p.boolean(f, level)
	case "max_pools":
		l.maxPools, err = p.integer(f, level, 1)
	case "labels":
		l.labels, err = p.labels(f, level)
	case "tls":
		err = p.tls(f, level, &l.tls)
	case "probe_pool":
		err = p.probe(f, level, &l.probe)
	default:
		err = p.errorf(f.line, f.path, "internal error: unhandled key")
	}
	return err
}

func (p *parser) labels(f field, level int) ([]labelOpt, error) {
	m, err := p.mapping(f, nil)
	if err != nil {
		return nil, err
	}
	reserved := ReservedLabels()
	out := make([]labelOpt, 0, len(m))
	for _, g := range m {
		switch {
		case !labelNameRE.MatchString(g.key):
			return nil, p.errorf(g.line, g.path, "invalid label name %q: use letters, digits and _, not starting with a digit", g.key)
		case strings.HasPrefix(g.key, "__"):
			return nil, p.errorf(g.line, g.path, "label names starting with __ are reserved for internal use")
		case contains(reserved, g.key):
			return nil, p.errorf(g.line, g.path, "label %q is reserved: poolwatch or Prometheus sets it (reserved: %s)", g.key, strings.Join(reserved, ", "))
		}
		v, err := p.scalar(g)
		if err != nil {
			return nil, err
		}
		out = append(out, labelOpt{name: g.key, value: v, level: level, line: g.line, path: g.path})
	}
	return out, nil
}

func (p *parser) tls(f field, level int, t *tlsLayer) error {
	m, err := p.mapping(f, tlsKeys())
	if err != nil {
		return err
	}
	for _, g := range m {
		// An empty string is allowed: it unsets a default file.
		var o opt[string]
		if isNull(g.val) {
			o = opt[string]{set: true, level: level, line: g.vline, path: g.path}
		} else if o, err = p.str(g, level); err != nil {
			return err
		}
		switch g.key {
		case "ca_file":
			t.caFile = o
		case "cert_file":
			t.certFile = o
		case "key_file":
			t.keyFile = o
		}
	}
	return nil
}

func (p *parser) probe(f field, level int, pl *probeLayer) error {
	m, err := p.mapping(f, probeKeys())
	if err != nil {
		return err
	}
	for _, g := range m {
		switch g.key {
		case "min_connections":
			pl.minConnections, err = p.integer(g, level, 0)
		case "max_connections":
			pl.maxConnections, err = p.integer(g, level, 1)
		case "acquire_retries":
			pl.acquireRetries, err = p.integer(g, level, 0)
		case "connect_timeout":
			pl.connectTimeout, err = p.duration(g, level, durPositive)
		case "health_check_timeout":
			pl.healthCheckTimeout, err = p.duration(g, level, durPositive)
		case "retry_backoff":
			pl.retryBackoff, err = p.duration(g, level, durNonNegative)
		case "leak_threshold":
			pl.leakThreshold, err = p.duration(g, level, durPositive)
		case "idle_close":
			pl.idleClose, err = p.duration(g, level, durNonNegative)
		case "statement_timeout":
			pl.statementTimeout, err = p.duration(g, level, durMillis)
		case "lock_timeout":
			pl.lockTimeout, err = p.duration(g, level, durMillis)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) target(it item, path string) (targetSpec, error) {
	t := targetSpec{path: path, line: it.line}
	if it.node.Kind != yaml.MappingNode {
		return t, p.errorf(it.line, path, "a target must be a mapping, not %s", kindName(it.node))
	}
	fields, err := p.fields(it.node, path, targetKeys())
	if err != nil {
		return t, err
	}
	for _, f := range fields {
		switch f.key {
		case "name":
			t.name, err = p.str(f, levelTarget)
		case "kind":
			t.kind, err = p.str(f, levelTarget)
		case "dsn":
			t.dsn, err = p.str(f, levelTarget)
		case "password_file":
			t.passwordFile, err = p.str(f, levelTarget)
		case "password_env":
			t.passwordEnv, err = p.str(f, levelTarget)
		case "application_pools":
			t.applicationPools, err = p.appPools(f)
		default:
			err = p.layerKey(f, levelTarget, &t.layer)
		}
		if err != nil {
			return t, err
		}
	}
	return t, nil
}

func (p *parser) appPools(f field) (opt[[]appPoolSpec], error) {
	o := opt[[]appPoolSpec]{set: true, level: levelTarget, line: f.line, path: f.path}
	items, err := p.sequence(f)
	if err != nil {
		return o, err
	}
	for i, it := range items {
		ap := appPoolSpec{path: joinIndex(f.path, i), line: it.line}
		if it.node.Kind != yaml.MappingNode {
			return o, p.errorf(it.line, ap.path, "an application pool must be a mapping, not %s", kindName(it.node))
		}
		fields, err := p.fields(it.node, ap.path, appPoolKeys())
		if err != nil {
			return o, err
		}
		for _, g := range fields {
			switch g.key {
			case "name":
				ap.name, err = p.str(g, levelTarget)
			case "application_name":
				ap.applicationName, err = p.str(g, levelTarget)
			case "user":
				ap.user, err = p.str(g, levelTarget)
			case "database":
				ap.database, err = p.str(g, levelTarget)
			case "min_connections":
				ap.minConnections, err = p.integer(g, levelTarget, 0)
			case "max_connections":
				ap.maxConnections, err = p.integer(g, levelTarget, 1)
			}
			if err != nil {
				return o, err
			}
		}
		o.val = append(o.val, ap)
	}
	return o, nil
}
