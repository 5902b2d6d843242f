package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	promconfig "github.com/prometheus/common/config"
	"go.yaml.in/yaml/v3"
)

// Format is what an application target's URL serves.
type Format string

// The formats of an application target.
const (
	// FormatAuto tells the two apart by the response's Content-Type, then
	// by its first byte ('{' is JSON).
	FormatAuto Format = "auto"
	// FormatPrometheus is the Prometheus text format (or OpenMetrics 1.0,
	// read by the same parser).
	FormatPrometheus Format = "prometheus"
	// FormatJSON is poolwatch's JSON status document (docs/application-status.md).
	FormatJSON Format = "json"
)

// Compare says how a seen_as entry's cross-check tells the replicas of an
// application apart.
type Compare string

// The comparisons of a seen_as entry.
const (
	// CompareAuto compares per instance when the instances' addresses
	// identify them on the server, and the total otherwise (see
	// docs/applications.md).
	CompareAuto Compare = "auto"
	// CompareInstance always compares the target alone against the server
	// connections from its URL's address.
	CompareInstance Compare = "instance"
	// CompareTotal always compares the sum over the targets that share the
	// seen_as entry against the server's total.
	CompareTotal Compare = "total"
)

// ByteSize is a size in bytes, written in the file as an integer with an
// optional unit: B, KiB, MiB, GiB, or KB, MB, GB, which mean the same as
// the binary units, as in Prometheus' body_size_limit.
type ByteSize int64

// String formats s with the largest binary unit that divides it.
func (s ByteSize) String() string {
	for _, u := range []struct {
		name string
		n    ByteSize
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s >= u.n && s%u.n == 0 {
			return strconv.FormatInt(int64(s/u.n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// parseByteSize parses a ByteSize as written in the file.
func parseByteSize(s string) (ByteSize, bool) {
	num := strings.TrimRight(s, "BKMGi")
	unit := s[len(num):]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	mult := map[string]ByteSize{"": 1, "B": 1, "KB": 1 << 10, "KiB": 1 << 10, "MB": 1 << 20, "MiB": 1 << 20, "GB": 1 << 30, "GiB": 1 << 30}[unit]
	if mult == 0 || n > (1<<62)/int64(mult) {
		return 0, false
	}
	return ByteSize(n) * mult, true
}

// SeenAs says how a server target of the same configuration sees an
// application target's connections: the application_name its backends (on
// postgres) or its clients (on pgbouncer) carry. The agent compares the
// connections the application counts in use with the connections that
// server sees for it (poolwatch_pool_unaccounted_connections).
type SeenAs struct {
	// Target is a postgres or pgbouncer target of the same configuration.
	Target string `yaml:"target" check:"required,nonempty"`
	// ApplicationName is a glob (as in application_pools) matched against
	// the application_name of the server's connections. Never empty.
	ApplicationName string `yaml:"application_name" check:"required,nonempty" hint:": use \"*\" to match every application"`
	// Pool is the application's pool (its `pool` label) whose connections
	// these are; empty: every pool of the target together.
	Pool string `yaml:"pool"`
	// Compare is how replicas are told apart; empty means CompareAuto.
	Compare Compare `yaml:"compare"`
}

// Kinds returns the known kinds of target, in the order errors list them.
func Kinds() []Kind {
	return []Kind{KindPostgres, KindPgBouncer, KindPgpool, KindPgCat, KindOdyssey, KindApplication}
}

// knownKind reports whether k is one of Kinds.
func knownKind(k Kind) bool { return slices.Contains(Kinds(), k) }

// kindList words Kinds for an error: "postgres, pgbouncer, ... or
// application".
func kindList() string {
	ks := Kinds()
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// applicationOnlyKeys are the keys of application targets only.
func applicationOnlyKeys() []string {
	return []string{"url", "format", "pool_label", "http_client", "seen_as", "body_size_limit"}
}

// serverOnlyKeys are the keys, set on a target, that an application target
// does not understand: it has no DSN and no probe pool.
func serverOnlyKeys() []string {
	return []string{"dsn", "password_file", "password_env", "application_pools", "leak_threshold", "tls", "probe_pool", "session_mode_leaks"}
}

// resolveApplication checks the keys of the application target t at tpath
// and fills in their defaults.
func (p *parser) resolveApplication(t *Target, tpath string) error {
	for _, key := range serverOnlyKeys() {
		if l, ok := p.at[tpath+"."+key]; ok {
			return p.errorf(l.key, tpath+"."+key, "applies to postgres and pgbouncer targets only: an application target is read over HTTP (url, http_client)")
		}
	}
	urlAt, ok := p.set(tpath + ".url")
	if !ok {
		return p.errorf(p.at[tpath].key, tpath+".url", "missing required key: an application target needs the url of its metrics or status endpoint")
	}
	u, err := url.Parse(t.URL)
	switch {
	case err != nil:
		return p.errorAt(urlAt, "invalid URL: %s", redactURLError(err))
	case u.Scheme != "http" && u.Scheme != "https":
		return p.errorAt(urlAt, "unsupported URL scheme %q: use http:// or https://", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return p.errorAt(urlAt, "the URL has no host")
	case u.User != nil:
		return p.errorAt(urlAt, "the URL carries a user or password: put credentials in http_client (basic_auth, authorization), never in the URL")
	}
	switch t.Format {
	case FormatAuto, FormatPrometheus, FormatJSON:
	default:
		return p.errorAt(p.origin(tpath, "format"), "unknown format %q: use auto, prometheus or json", t.Format)
	}
	if o, ok := p.set(tpath + ".pool_label"); ok && t.PoolLabel != "" && !identRE.MatchString(t.PoolLabel) {
		return p.errorAt(o, "invalid label name %q: use letters, digits and _, not starting with a digit", t.PoolLabel)
	}
	if _, ok := p.set(tpath + ".http_client"); !ok {
		t.HTTPClient = promconfig.DefaultHTTPClientConfig
	}
	seen := map[string]int{}
	for i, s := range t.SeenAs {
		spath := joinIndex(tpath+".seen_as", i)
		if s.Compare == "" {
			t.SeenAs[i].Compare = CompareAuto
		}
		switch t.SeenAs[i].Compare {
		case CompareAuto, CompareTotal:
		case CompareInstance:
			if net.ParseIP(u.Hostname()) == nil {
				o, _ := p.set(spath + ".compare")
				return p.errorAt(o, "compare: instance needs the target's url to name the instance by its IP address (it is compared with the client addresses the server shows), not %q", u.Hostname())
			}
		default:
			o, _ := p.set(spath + ".compare")
			return p.errorAt(o, "unknown comparison %q: use auto, instance or total", s.Compare)
		}
		key := s.Target + "\x00" + s.ApplicationName + "\x00" + s.Pool
		if first, dup := seen[key]; dup {
			return p.errorf(p.at[spath].key, spath, "duplicate seen_as entry (first defined at line %d)", first)
		}
		seen[key] = p.at[spath].key
	}
	return nil
}

// resolveSeenAs checks that every seen_as entry names a postgres or
// pgbouncer target of the configuration, and records on each such server
// target the application_name globs it must count (Target.Applications).
func (p *parser) resolveSeenAs(targets []Target) error {
	byName := make(map[string]int, len(targets))
	for i, t := range targets {
		byName[t.Name] = i
	}
	globs := map[int]map[string]bool{}
	for i, t := range targets {
		for j, s := range t.SeenAs {
			o, _ := p.set(joinIndex(joinIndex("targets", i)+".seen_as", j) + ".target")
			k, ok := byName[s.Target]
			switch {
			case !ok:
				return p.errorAt(o, "no target named %q in this configuration", s.Target)
			case targets[k].Kind != KindPostgres && targets[k].Kind != KindPgBouncer:
				return p.errorAt(o, "target %q is of kind %s: seen_as names a postgres or pgbouncer target", s.Target, targets[k].Kind)
			}
			if globs[k] == nil {
				globs[k] = map[string]bool{}
			}
			globs[k][s.ApplicationName] = true
		}
	}
	for k, set := range globs {
		for g := range set {
			targets[k].Applications = append(targets[k].Applications, g)
		}
		sort.Strings(targets[k].Applications)
	}
	return nil
}

// decodeHTTPClient decodes an http_client mapping strictly with
// prometheus/common's own YAML unmarshalling, resolves its relative file
// paths against the configuration's directory and validates it.
func (p *parser) decodeHTTPClient(c *promconfig.HTTPClientConfig, n *yaml.Node, line int, path string) error {
	if isNull(n) {
		*c = promconfig.DefaultHTTPClientConfig
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errorf(line, path, "must be a mapping, not %s", kindName(n))
	}
	if err := decodeStrict(n, c); err != nil {
		l, msg := yamlDecodeError(err)
		if l > 0 {
			line = n.Line + l - 1
		}
		return p.errorf(line, path, "%s", msg)
	}
	c.SetDirectory(p.dir)
	if err := c.Validate(); err != nil {
		return p.errorf(line, path, "%s", err)
	}
	return nil
}

// RedactedURL returns the target's URL for logs and errors. URLs with
// credentials are refused at load, so it is the URL as written, with any
// query string's values replaced by "xxxxx" (a token may hide there).
func (t Target) RedactedURL() string { return RedactURL(t.URL) }

// RedactURL returns rawURL without its user information and with the values
// of its query string replaced by "xxxxx". An unparseable URL gives "".
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	u.User = nil
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"xxxxx"}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// redactURLError returns a URL parse error's reason without the URL, which
// may hold a secret.
func redactURLError(err error) string {
	if ue, ok := err.(*url.Error); ok { //nolint:errorlint // url.Parse returns *url.Error itself
		return ue.Err.Error()
	}
	return fmt.Sprint(err)
}

// decodeStrict decodes n into out with the yaml package's own decoding (and
// out's UnmarshalYAML methods), refusing unknown keys. Aliases inside n are
// expanded first, so that n can be decoded on its own.
func decodeStrict(n *yaml.Node, out any) error {
	b, err := yaml.Marshal(expandAliases(n, 0))
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(out)
}

// expandAliases returns a copy of n with every alias replaced by a copy of
// what it names (at most 64 levels deep: deeper nesting is left as it is
// and fails to decode).
func expandAliases(n *yaml.Node, depth int) *yaml.Node {
	if n == nil || depth > 64 {
		return n
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return expandAliases(n.Alias, depth+1)
	}
	c := *n
	c.Anchor = ""
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, sub := range n.Content {
		c.Content[i] = expandAliases(sub, depth+1)
	}
	return &c
}

var (
	yamlErrLineRE  = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlNotFoundRE = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
)

// yamlDecodeError returns the (1-based, relative to the decoded node) line
// and the message of a decoding error: the first of its errors, with Go type
// names worded as keys. line is 0 when the error names none.
func yamlDecodeError(err error) (line int, msg string) {
	msg = err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := yamlErrLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if m := yamlNotFoundRE.FindStringSubmatch(msg); m != nil {
		msg = "unknown key " + strconv.Quote(m[1])
	}
	return line, msg
}
