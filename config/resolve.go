package config

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Defaults that derive from the scrape timeout.
const (
	maxDefaultConnectTimeout     = 3 * time.Second
	maxDefaultHealthCheckTimeout = time.Second
)

// resolve validates doc and builds its targets with the defaults merged in.
func (p *parser) resolve(doc *document) ([]Target, error) {
	dir := filepath.Dir(p.file)
	base := doc.defaults.over(builtinLayer())
	// The defaults must make sense on their own, so that an error in them
	// is reported against them and not against the first target.
	if err := p.checkLayer(base, dir); err != nil {
		return nil, err
	}
	if len(doc.targets) == 0 {
		return nil, p.errorf(doc.targetsLine, "targets", "at least one target is required")
	}
	names := map[string]int{}
	out := make([]Target, 0, len(doc.targets))
	for _, ts := range doc.targets {
		t, err := p.resolveTarget(ts, base, dir, names)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// required returns an error for a key that is missing from the target or
// application pool at path, written at line.
func (p *parser) required(line int, path, key string) error {
	return p.errorf(line, joinKey(path, key), "missing required key")
}

func (p *parser) resolveTarget(ts targetSpec, base layer, dir string, names map[string]int) (Target, error) {
	var t Target

	// name
	switch {
	case !ts.name.set:
		return t, p.required(ts.line, ts.path, "name")
	case ts.name.val == "":
		return t, p.errorf(ts.name.line, ts.name.path, "must not be empty")
	case !targetNameRE.MatchString(ts.name.val):
		return t, p.errorf(ts.name.line, ts.name.path, "invalid target name %q: use only letters, digits and _ . : -", ts.name.val)
	}
	if first, dup := names[ts.name.val]; dup {
		return t, p.errorf(ts.name.line, ts.name.path, "duplicate target name %q (first defined at line %d)", ts.name.val, first)
	}
	names[ts.name.val] = ts.name.line
	t.Name = ts.name.val

	// kind
	if !ts.kind.set {
		return t, p.required(ts.line, ts.path, "kind")
	}
	switch k := Kind(ts.kind.val); k {
	case KindPostgres, KindPgBouncer:
		t.Kind = k
	default:
		return t, p.errorf(ts.kind.line, ts.kind.path, "unknown kind %q: use postgres or pgbouncer", ts.kind.val)
	}

	// dsn
	if !ts.dsn.set {
		return t, p.required(ts.line, ts.path, "dsn")
	}
	info, msg := checkDSN(ts.dsn.val, t.Kind)
	if msg != "" {
		return t, p.errorf(ts.dsn.line, ts.dsn.path, "%s", msg)
	}
	t.DSN = ts.dsn.val

	// password
	pw, err := p.password(ts, info, dir)
	if err != nil {
		return t, err
	}
	t.Password = pw

	// Keys that only one kind of target understands, set on the target
	// itself. (Set under defaults, they apply to the targets of that kind.)
	if t.Kind == KindPgBouncer {
		if ts.applicationPools.set {
			return t, p.errorf(ts.applicationPools.line, ts.applicationPools.path, "application_pools are for postgres targets only")
		}
		for _, o := range []opt[time.Duration]{ts.layer.probe.statementTimeout, ts.layer.probe.lockTimeout} {
			if o.set {
				return t, p.errorf(o.line, o.path, "applies to postgres targets only: the PgBouncer console rejects it")
			}
		}
	}
	if t.Kind == KindPostgres && ts.layer.sessionModeLeaks.set {
		o := ts.layer.sessionModeLeaks
		return t, p.errorf(o.line, o.path, "applies to pgbouncer targets only")
	}

	l := ts.layer.over(base)
	if err := p.checkLayer(l, dir); err != nil {
		return t, err
	}
	if err := p.checkTLSAgainstDSN(l.tls, ts.dsn, info); err != nil {
		return t, err
	}

	t.Labels = map[string]string{}
	for _, lb := range l.labels {
		t.Labels[lb.name] = lb.value
	}
	for k, v := range t.Labels {
		if v == "" {
			delete(t.Labels, k)
		}
	}
	t.ScrapeTimeout = l.scrapeTimeout.val
	t.MinScrapeInterval = l.minScrapeInterval.val
	t.LeakThreshold = l.leakThreshold.val
	t.SessionModeLeaks = t.Kind == KindPgBouncer && l.sessionModeLeaks.val
	t.MaxPools = l.maxPools.val
	t.TLS = TLSFiles{
		CAFile:   resolvePath(dir, l.tls.caFile.val),
		CertFile: resolvePath(dir, l.tls.certFile.val),
		KeyFile:  resolvePath(dir, l.tls.keyFile.val),
	}
	t.ProbePool = probePool(l, t.Kind)

	if t.Kind == KindPostgres && ts.applicationPools.set {
		t.ApplicationPools, err = p.applicationPools(ts.applicationPools.val)
		if err != nil {
			return t, err
		}
	}
	return t, nil
}

// probePool returns the effective probe pool settings of a merged layer.
func probePool(l layer, kind Kind) ProbePool {
	pp := ProbePool{
		MinConnections:     l.probe.minConnections.val,
		MaxConnections:     l.probe.maxConnections.val,
		AcquireRetries:     l.probe.acquireRetries.val,
		ConnectTimeout:     min(maxDefaultConnectTimeout, l.scrapeTimeout.val),
		HealthCheckTimeout: min(maxDefaultHealthCheckTimeout, l.scrapeTimeout.val),
		RetryBackoff:       l.probe.retryBackoff.val,
		LeakThreshold:      l.probe.leakThreshold.val,
		IdleClose:          l.probe.idleClose.val,
	}
	if l.probe.connectTimeout.set {
		pp.ConnectTimeout = l.probe.connectTimeout.val
	}
	if l.probe.healthCheckTimeout.set {
		pp.HealthCheckTimeout = l.probe.healthCheckTimeout.val
	}
	if kind == KindPostgres {
		pp.StatementTimeout = l.scrapeTimeout.val
		if l.probe.statementTimeout.set && l.probe.statementTimeout.val > 0 {
			pp.StatementTimeout = l.probe.statementTimeout.val
		}
		pp.LockTimeout = l.probe.lockTimeout.val
	}
	return pp
}

// password checks the target's password sources.
func (p *parser) password(ts targetSpec, info dsnInfo, dir string) (PasswordSource, error) {
	var sources []string
	if info.hasPassword() {
		sources = append(sources, "a password in the DSN")
	}
	if ts.passwordFile.set {
		sources = append(sources, "password_file")
	}
	if ts.passwordEnv.set {
		sources = append(sources, "password_env")
	}
	if len(sources) > 1 {
		// Report it at the second source: the one that made it ambiguous.
		at := ts.passwordEnv
		if sources[1] == "password_file" {
			at = ts.passwordFile
		}
		return PasswordSource{}, p.errorf(at.line, at.path, "more than one password source (%s and %s): keep one", sources[0], sources[1])
	}
	switch {
	case ts.passwordFile.set:
		o := ts.passwordFile
		if o.val == "" {
			return PasswordSource{}, p.errorf(o.line, o.path, "must not be empty")
		}
		path := resolvePath(dir, o.val)
		if err := checkReadable(path); err != nil {
			return PasswordSource{}, &Error{File: p.file, Line: o.line, Path: o.path, Msg: "cannot read password file: " + err.Error(), err: err}
		}
		return PasswordSource{File: path}, nil
	case ts.passwordEnv.set:
		o := ts.passwordEnv
		switch {
		case o.val == "":
			return PasswordSource{}, p.errorf(o.line, o.path, "must not be empty")
		case !envNameRE.MatchString(o.val):
			// Not quoted: a password written here by mistake must not leak.
			return PasswordSource{}, p.errorf(o.line, o.path, "must be the name of an environment variable (letters, digits and _, not starting with a digit)")
		case os.Getenv(o.val) == "":
			return PasswordSource{}, p.errorf(o.line, o.path, "environment variable %q is not set or empty", o.val)
		}
		return PasswordSource{Env: o.val}, nil
	}
	return PasswordSource{}, nil
}

// checkLayer checks the rules that span several keys of a merged layer.
func (p *parser) checkLayer(l layer, dir string) error {
	pr := l.probe
	if pr.minConnections.val > pr.maxConnections.val {
		if pr.maxConnections.level > pr.minConnections.level {
			return p.errorf(pr.maxConnections.line, pr.maxConnections.path, "%d is less than min_connections %d (%s)", pr.maxConnections.val, pr.minConnections.val, pr.minConnections.where())
		}
		return p.errorf(pr.minConnections.line, pr.minConnections.path, "%d is greater than max_connections %d (%s)", pr.minConnections.val, pr.maxConnections.val, pr.maxConnections.where())
	}
	timeouts := []struct {
		o    opt[time.Duration]
		name string
	}{{pr.connectTimeout, "probe_pool.connect_timeout"}, {pr.healthCheckTimeout, "probe_pool.health_check_timeout"}}
	for _, to := range timeouts {
		o, name := to.o, to.name
		if !o.set || o.val <= l.scrapeTimeout.val {
			continue
		}
		if st := l.scrapeTimeout; st.level > o.level {
			return p.errorf(st.line, st.path, "%s is shorter than %s %s (%s)", st.val, name, o.val, o.where())
		}
		return p.errorf(o.line, o.path, "%s is longer than scrape_timeout %s (%s)", o.val, l.scrapeTimeout.val, l.scrapeTimeout.where())
	}
	t := l.tls
	switch {
	case t.certFile.val != "" && t.keyFile.val == "":
		return p.errorf(t.certFile.line, t.certFile.path, "cert_file needs key_file too")
	case t.keyFile.val != "" && t.certFile.val == "":
		return p.errorf(t.keyFile.line, t.keyFile.path, "key_file needs cert_file too")
	}
	for _, o := range []opt[string]{t.caFile, t.certFile, t.keyFile} {
		if o.val == "" {
			continue
		}
		if err := checkReadable(resolvePath(dir, o.val)); err != nil {
			return &Error{File: p.file, Line: o.line, Path: o.path, Msg: "cannot read file: " + err.Error(), err: err}
		}
	}
	return nil
}

// checkTLSAgainstDSN rejects TLS files that the DSN also sets, or that a DSN
// without TLS would silently ignore.
func (p *parser) checkTLSAgainstDSN(t tlsLayer, dsn opt[string], info dsnInfo) error {
	pairs := []struct {
		file      opt[string]
		name, key string
	}{{t.caFile, "tls.ca_file", "sslrootcert"}, {t.certFile, "tls.cert_file", "sslcert"}, {t.keyFile, "tls.key_file", "sslkey"}}
	for _, pr := range pairs {
		if pr.file.val == "" {
			continue
		}
		if _, ok := info.settings[pr.key]; ok {
			return p.errorf(dsn.line, dsn.path, "the DSN sets %s and %s is set too (%s): set the file in one place", pr.key, pr.name, pr.file.where())
		}
		if !info.usesTLS {
			return p.errorf(dsn.line, dsn.path, "%s is set (%s) but this DSN never uses TLS (sslmode=disable or a Unix socket): unset it for this target with an empty value", pr.name, pr.file.where())
		}
	}
	return nil
}

func (p *parser) applicationPools(specs []appPoolSpec) ([]ApplicationPool, error) {
	out := make([]ApplicationPool, 0, len(specs))
	names := map[string]int{}
	for _, s := range specs {
		switch {
		case !s.name.set:
			return nil, p.required(s.line, s.path, "name")
		case s.name.val == "":
			return nil, p.errorf(s.name.line, s.name.path, "must not be empty")
		case s.name.val == ServerPoolName:
			return nil, p.errorf(s.name.line, s.name.path, "%q is reserved for the server's connection slots", ServerPoolName)
		}
		if first, dup := names[s.name.val]; dup {
			return nil, p.errorf(s.name.line, s.name.path, "duplicate application pool name %q (first defined at line %d)", s.name.val, first)
		}
		names[s.name.val] = s.name.line
		switch {
		case !s.applicationName.set:
			return nil, p.required(s.line, s.path, "application_name")
		case s.applicationName.val == "":
			return nil, p.errorf(s.applicationName.line, s.applicationName.path, "must not be empty: use \"*\" to match every application")
		}
		if s.minConnections.set && s.maxConnections.set && s.minConnections.val > s.maxConnections.val {
			return nil, p.errorf(s.minConnections.line, s.minConnections.path, "%d is greater than max_connections %d (%s)", s.minConnections.val, s.maxConnections.val, s.maxConnections.where())
		}
		ap := ApplicationPool{
			Name:            s.name.val,
			ApplicationName: s.applicationName.val,
			User:            s.user.val,
			Database:        s.database.val,
		}
		if s.minConnections.set {
			v := s.minConnections.val
			ap.MinConnections = &v
		}
		if s.maxConnections.set {
			v := s.maxConnections.val
			ap.MaxConnections = &v
		}
		out = append(out, ap)
	}
	return out, nil
}

// resolvePath resolves a file path from the configuration against dir.
func resolvePath(dir, path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// checkReadable checks that path names a file that can be opened for
// reading, without reading it.
func checkReadable(path string) error {
	f, err := os.Open(path) //nolint:gosec // the path comes from the operator's config
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	return nil
}
