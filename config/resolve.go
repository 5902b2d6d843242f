package config

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"
)

// Defaults that derive from the scrape timeout.
const (
	maxDefaultConnectTimeout     = 3 * time.Second
	maxDefaultHealthCheckTimeout = time.Second
)

// origin is where a setting got its value: a path and line in the file, or
// the built-in default (path "").
type origin struct {
	path string
	line int
}

func (o origin) String() string {
	if o.path == "" {
		return "built-in default"
	}
	return fmt.Sprintf("%s, line %d", o.path, o.line)
}

// level orders origins: built-in default, defaults, target.
func (o origin) level() int {
	switch {
	case o.path == "":
		return 0
	case strings.HasPrefix(o.path, "defaults"):
		return 1
	}
	return 2
}

// set returns where the key at path was written, if it was.
func (p *parser) set(path string) (origin, bool) {
	l, ok := p.at[path]
	if !ok {
		return origin{}, false
	}
	return origin{path: path, line: l.val}, true
}

// origin returns where the setting key (a path relative to a target, such as
// probe_pool.max_connections) of the target at tpath got its value.
func (p *parser) origin(tpath, key string) origin {
	if o, ok := p.set(tpath + "." + key); ok {
		return o
	}
	o, _ := p.set("defaults." + key)
	return o
}

func (p *parser) errorAt(o origin, format string, args ...any) *Error {
	return p.errorf(o.line, o.path, format, args...)
}

// atMost checks that the setting lo of the target (or application pool) at
// tpath is at most the setting hi, with values l and h. A violation is
// reported at the one of the two set most specifically (the other one is
// the cause only if it is set at the same level), naming the other key
// relative to the reported one's mapping, and where it was set.
func atMost[T int | time.Duration](p *parser, tpath, lo, hi string, l, h T) error {
	if l <= h {
		return nil
	}
	more, less := "greater", "less"
	if _, ok := any(l).(time.Duration); ok {
		more, less = "longer", "shorter"
	}
	rel := func(key, at string) string { return strings.TrimPrefix(key, at[:strings.LastIndex(at, ".")+1]) }
	lo0, hi0 := p.origin(tpath, lo), p.origin(tpath, hi)
	if hi0.level() > lo0.level() {
		return p.errorAt(hi0, "%v is %s than %s %v (%s)", h, less, rel(lo, hi), l, lo0)
	}
	return p.errorAt(lo0, "%v is %s than %s %v (%s)", l, more, rel(hi, lo), h, hi0)
}

// resolve is the one validation pass over what the decoder could not check
// key by key. It checks the defaults on their own (so that an error in them
// is reported against them, not against the first target), then every
// target, and fills in the values that derive from others. targetsLine is
// where targets is, or would be, written.
func (p *parser) resolve(base Target, targets []Target, targetsLine int) ([]Target, error) {
	if err := p.checkShared(&base, "defaults"); err != nil {
		return nil, err
	}
	p.defaults = base.clone()
	if err := p.resolveProbes(); err != nil {
		return nil, err
	}
	// A configuration for probes by address only needs no target.
	switch {
	case len(targets) > 0 || p.probe.Enabled() && len(p.modules) > 0:
	case p.probe.Enabled() || len(p.modules) > 0:
		return nil, p.errorf(targetsLine, "targets", "at least one target is required, unless auth_modules and probe.allowed_targets are both set for probes by address")
	default:
		return nil, p.errorf(targetsLine, "targets", "at least one target is required")
	}
	names := map[string]int{}
	for i := range targets {
		if err := p.resolveTarget(&targets[i], joinIndex("targets", i), names); err != nil {
			return nil, err
		}
	}
	if err := p.resolveSeenAs(targets); err != nil {
		return nil, err
	}
	if err := p.checkUpstreams(targets); err != nil {
		return nil, err
	}
	return targets, nil
}

// resolveTarget checks the target t at tpath and fills in derived values.
func (p *parser) resolveTarget(t *Target, tpath string, names map[string]int) error {
	name, _ := p.set(tpath + ".name")
	if !targetNameRE.MatchString(t.Name) {
		return p.errorAt(name, "invalid target name %q: use only letters, digits and _ . : -", t.Name)
	}
	if first, dup := names[t.Name]; dup {
		return p.errorAt(name, "duplicate target name %q (first defined at line %d)", t.Name, first)
	}
	names[t.Name] = name.line
	if !knownKind(t.Kind) {
		return p.errorAt(p.origin(tpath, "kind"), "unknown kind %q: use %s", t.Kind, kindList())
	}
	if t.Kind == KindApplication {
		if err := p.resolveApplication(t, tpath); err != nil {
			return err
		}
		// Defaults of the server kinds do not apply: no DSN, no probe pool.
		t.LeakThreshold, t.SessionModeLeaks, t.TLS, t.ProbePool = 0, false, TLSFiles{}, ProbePool{}
		resolveLabels(t)
		return nil
	}
	for _, key := range applicationOnlyKeys() {
		if o, ok := p.set(tpath + "." + key); ok {
			return p.errorAt(o, "applies to application targets only")
		}
	}
	if _, ok := p.set(tpath + ".dsn"); !ok {
		return p.errorf(p.at[tpath].key, tpath+".dsn", "missing required key")
	}
	dsn := p.origin(tpath, "dsn")
	info, msg := checkDSN(t.DSN, t.Kind)
	if msg != "" {
		return p.errorAt(dsn, "%s", msg)
	}
	if err := p.checkPassword(t.Password, info, tpath); err != nil {
		return err
	}

	// Keys that only one kind of target understands, set on the target
	// itself. (Set under defaults, they apply to the targets of that kind.)
	if t.Kind != KindPostgres {
		if l, ok := p.at[tpath+".application_pools"]; ok {
			return p.errorf(l.key, tpath+".application_pools", "application_pools are for postgres targets only")
		}
		for _, key := range []string{".probe_pool.statement_timeout", ".probe_pool.lock_timeout"} {
			if o, ok := p.set(tpath + key); ok {
				if t.Kind == KindPgBouncer {
					return p.errorAt(o, "applies to postgres targets only: the PgBouncer console rejects it")
				}
				return p.errorAt(o, "applies to postgres targets only")
			}
		}
	}
	if o, ok := p.set(tpath + ".session_mode_leaks"); ok && t.Kind != KindPgBouncer {
		return p.errorAt(o, "applies to pgbouncer targets only")
	}
	if o, ok := p.set(tpath + ".log_query_text"); ok && t.Kind != KindPostgres {
		return p.errorAt(o, "applies to postgres targets only: only they log a leaked connection's query")
	}
	if t.Kind == KindPgpool {
		if err := p.resolvePgpoolProbePool(t, tpath); err != nil {
			return err
		}
	}

	if err := p.checkShared(t, tpath); err != nil {
		return err
	}
	if err := p.checkTLSAgainstDSN(t, tpath, dsn, info); err != nil {
		return err
	}
	pools := map[string]int{}
	for i, ap := range t.ApplicationPools {
		apath := joinIndex(tpath+".application_pools", i)
		name, _ := p.set(apath + ".name")
		if ap.Name == ServerPoolName {
			return p.errorAt(name, "%q is reserved for the server's connection slots", ServerPoolName)
		}
		if first, dup := pools[ap.Name]; dup {
			return p.errorAt(name, "duplicate application pool name %q (first defined at line %d)", ap.Name, first)
		}
		pools[ap.Name] = name.line
		if ap.MinConnections != nil && ap.MaxConnections != nil {
			if err := atMost(p, apath, "min_connections", "max_connections", *ap.MinConnections, *ap.MaxConnections); err != nil {
				return err
			}
		}
	}

	t.derive()
	return nil
}

// derive fills in what a server target's settings derive from others: it
// drops labels given the empty value, clears session_mode_leaks on a
// postgres target and the application keys, sets the probe pool's timeouts
// left at zero from the scrape timeout, and clears the session timeouts of
// a kind that does not take them. Configured targets and targets probed by
// address (AddressTarget) go through it alike.
func (t *Target) derive() {
	resolveLabels(t)
	t.SessionModeLeaks = t.SessionModeLeaks && t.Kind == KindPgBouncer
	t.LogQueryText = t.LogQueryText && t.Kind == KindPostgres
	t.Format, t.BodySizeLimit = "", 0
	pp := &t.ProbePool
	if pp.ConnectTimeout == 0 {
		pp.ConnectTimeout = min(maxDefaultConnectTimeout, t.ScrapeTimeout)
	}
	if pp.HealthCheckTimeout == 0 {
		pp.HealthCheckTimeout = min(maxDefaultHealthCheckTimeout, t.ScrapeTimeout)
	}
	if pp.StatementTimeout == 0 {
		pp.StatementTimeout = t.ScrapeTimeout
	}
	if t.Kind != KindPostgres {
		pp.StatementTimeout, pp.LockTimeout = 0, 0
	}
}

// resolvePgpoolProbePool holds a pgpool target's probe pool to
// PgpoolMaxProbeConnections: each connection takes one of Pgpool-II's
// children. A larger max_connections set on the target itself is an error;
// one inherited from defaults (meant for the other kinds) is lowered, and
// min_connections with it.
func (p *parser) resolvePgpoolProbePool(t *Target, tpath string) error {
	pp := &t.ProbePool
	if pp.MaxConnections <= PgpoolMaxProbeConnections {
		return nil
	}
	if o, ok := p.set(tpath + ".probe_pool.max_connections"); ok {
		return p.errorAt(o, "a pgpool target holds at most %d connection: each takes one of Pgpool-II's child processes (num_init_children)", PgpoolMaxProbeConnections)
	}
	pp.MaxConnections = PgpoolMaxProbeConnections
	pp.MinConnections = min(pp.MinConnections, PgpoolMaxProbeConnections)
	return nil
}

// resolveLabels removes the labels that t unsets with "".
func resolveLabels(t *Target) {
	for k, v := range t.Labels {
		if v == "" {
			delete(t.Labels, k)
		}
	}
}

// checkShared checks the rules that span several of the keys that defaults
// and targets share, on the defaults (tpath "defaults") or a target.
func (p *parser) checkShared(t *Target, tpath string) error {
	pp := t.ProbePool
	for _, err := range []error{
		atMost(p, tpath, "probe_pool.min_connections", "probe_pool.max_connections", pp.MinConnections, pp.MaxConnections),
		atMost(p, tpath, "probe_pool.connect_timeout", "scrape_timeout", pp.ConnectTimeout, t.ScrapeTimeout), // 0: derived, passes
		atMost(p, tpath, "probe_pool.health_check_timeout", "scrape_timeout", pp.HealthCheckTimeout, t.ScrapeTimeout),
	} {
		if err != nil {
			return err
		}
	}
	switch {
	case t.TLS.CertFile != "" && t.TLS.KeyFile == "":
		return p.errorAt(p.origin(tpath, "tls.cert_file"), "cert_file needs key_file too")
	case t.TLS.KeyFile != "" && t.TLS.CertFile == "":
		return p.errorAt(p.origin(tpath, "tls.key_file"), "key_file needs cert_file too")
	}
	for _, tf := range tlsFiles(t.TLS) {
		if tf.path == "" {
			continue
		}
		f, _, err := openRegular(tf.path)
		if err != nil {
			o := p.origin(tpath, tf.key)
			return &Error{File: p.file, Line: o.line, Path: o.path, Msg: "cannot read file: " + err.Error(), err: err}
		}
		_ = f.Close()
	}
	return nil
}

// tlsFile is one of a target's TLS files: its key, the DSN parameter that
// names the same file, and its path.
type tlsFile struct{ key, dsnKey, path string }

func tlsFiles(t TLSFiles) []tlsFile {
	return []tlsFile{{"tls.ca_file", "sslrootcert", t.CAFile}, {"tls.cert_file", "sslcert", t.CertFile}, {"tls.key_file", "sslkey", t.KeyFile}}
}

// checkTLSAgainstDSN rejects TLS files that the DSN also sets, or that a DSN
// without TLS would silently ignore.
func (p *parser) checkTLSAgainstDSN(t *Target, tpath string, dsn origin, info dsnInfo) error {
	for _, tf := range tlsFiles(t.TLS) {
		if tf.path == "" {
			continue
		}
		if _, ok := info.settings[tf.dsnKey]; ok {
			return p.errorAt(dsn, "the DSN sets %s and %s is set too (%s): set the file in one place", tf.dsnKey, tf.key, p.origin(tpath, tf.key))
		}
		if !info.usesTLS {
			return p.errorAt(dsn, "%s is set (%s) but this DSN never uses TLS (sslmode=disable or a Unix socket): unset it for this target with an empty value", tf.key, p.origin(tpath, tf.key))
		}
	}
	return nil
}

// checkPassword checks the password sources of the target at tpath.
func (p *parser) checkPassword(pw PasswordSource, info dsnInfo, tpath string) error {
	file, hasFile := p.set(tpath + ".password_file")
	env, hasEnv := p.set(tpath + ".password_env")
	switch {
	case info.hasPassword() && (hasFile || hasEnv):
		// Reported at the second source: the one that made it ambiguous.
		if hasFile {
			return p.errorAt(file, "more than one password source (a password in the DSN and password_file): keep one")
		}
		return p.errorAt(env, "more than one password source (a password in the DSN and password_env): keep one")
	case hasFile && hasEnv:
		return p.errorAt(env, "more than one password source (password_file and password_env): keep one")
	case hasFile:
		switch empty, err := checkPasswordFile(pw.File); {
		case err != nil:
			return &Error{File: p.file, Line: file.line, Path: file.path, Msg: "cannot read password file: " + err.Error(), err: err}
		case empty:
			return p.errorAt(file, "password file %s is empty", pw.File)
		}
	case hasEnv && !identRE.MatchString(pw.Env):
		// Not quoted: a password written here by mistake must not leak.
		return p.errorAt(env, "must be the name of an environment variable (letters, digits and _, not starting with a digit)")
	case hasEnv && os.Getenv(pw.Env) == "":
		return p.errorAt(env, "environment variable %q is not set or empty", pw.Env)
	}
	return nil
}

// openRegular opens path for reading if it is a regular file, and returns
// it with its size. It never blocks: it opens with O_NONBLOCK (a FIFO
// without a writer or a device would otherwise block the open) and refuses
// anything but a regular file before reading a byte.
func openRegular(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0) //nolint:gosec // the path comes from the operator's config
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		switch m := st.Mode(); {
		case m.IsDir():
			err = fmt.Errorf("%s is a directory", path)
		case m&fs.ModeNamedPipe != 0:
			err = fmt.Errorf("%s is a named pipe (FIFO), not a regular file", path)
		case m&fs.ModeDevice != 0:
			err = fmt.Errorf("%s is a device, not a regular file", path)
		default:
			err = fmt.Errorf("%s is not a regular file (%s)", path, m.Type())
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// checkPasswordFile checks at load what PasswordSource.Read would refuse on
// every connection: a file that is not a regular file or cannot be opened
// (err), or that is empty: nothing, or a lone newline, which Read removes.
// Only a file of at most two bytes is read, to tell a lone newline from a
// short password.
func checkPasswordFile(path string) (empty bool, err error) {
	f, size, err := openRegular(path)
	if err != nil {
		return false, err
	}
	defer func() { _ = f.Close() }()
	if size > 2 {
		return false, nil
	}
	head, err := io.ReadAll(io.LimitReader(f, 3))
	s := string(head)
	return s == "" || s == "\n" || s == "\r\n", err
}
