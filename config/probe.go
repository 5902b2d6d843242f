package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file holds /probe by address: the auth_modules that name
// credentials, the probe section that says which addresses may be probed,
// and AddressTarget, which turns an address and an auth module into a
// Target built like a configured one (the defaults merged in).
//
//	auth_modules:
//	  monitoring:
//	    user: poolwatch
//	    password_file: /run/secrets/poolwatch   # or password_env
//	    sslmode: verify-full
//	    tls: {ca_file: /etc/poolwatch/ca.pem}
//	probe:
//	  allowed_targets: ["db-*.internal:5432", "127.0.0.1:*"]
//	  max_targets: 100
//	  idle_close: 5m
//
// postgres_exporter's shape of an auth module (type: userpass, userpass:
// {username, password}, options: {sslmode: disable}) is accepted too, so
// that its auth_modules section can be copied over unchanged.

// AuthModule holds the credentials and connection settings of probes by
// address that name it (auth_module=NAME). Exactly one user is set (User
// or UserPass.Username), and at most one password source.
type AuthModule struct {
	// User is the role to log in as.
	User string `yaml:"user" check:"nonempty"`
	// Password is where the password comes from, as for targets; zero
	// means UserPass.Password, or none.
	Password PasswordSource `yaml:",inline"`
	// SSLMode is libpq's sslmode; empty means pgx's default (prefer). It may
	// be given under options instead, not in both places.
	SSLMode string `yaml:"sslmode"`
	// TLS holds the files for TLS, as a target's tls.
	TLS TLSFiles `yaml:"tls"`
	// InsecurePasswordAuth lets a probe by address answer a server that
	// asks for the password in clear or as an MD5 hash. Off by default:
	// the caller of /probe chose the address, and only SCRAM (or a TLS
	// client certificate) proves the identity without revealing the
	// password to whatever answers there.
	InsecurePasswordAuth bool `yaml:"insecure_password_auth"`
	// Options are further connection parameters, written into the
	// connection string (application_name, connect_timeout, channel_binding,
	// sslmode...). Parameters that other keys or the probe pool set are
	// refused.
	Options map[string]string `yaml:"options"`

	// Type is postgres_exporter's module type: empty or "userpass".
	Type string `yaml:"type"`
	// UserPass is postgres_exporter's user and inline password; nil when
	// not used.
	UserPass *UserPass `yaml:"userpass"`
}

// UserPass is postgres_exporter's userpass block.
type UserPass struct {
	Username string `yaml:"username" check:"required,nonempty"`
	// Password is written in the configuration file; prefer password_file.
	Password string `yaml:"password"`
}

// user returns the module's role.
func (m AuthModule) user() string {
	if m.UserPass != nil {
		return m.UserPass.Username
	}
	return m.User
}

// Probe configures /probe by address.
type Probe struct {
	// AllowedTargets are globs of host:port that may be probed by address:
	// `*` matches any run of characters and `?` one character, in the host
	// and the port alike; hosts compare case-insensitively, an IPv6 host is
	// written in brackets ("[::1]:5432"). Empty, the default, turns probes
	// by address off.
	AllowedTargets []string `yaml:"allowed_targets" check:"nonempty"`
	// MaxTargets bounds the probe pools held for addresses at once (>= 1).
	// A probe of a new address past it is refused until one closes.
	MaxTargets int `yaml:"max_targets" default:"100" check:"positive"`
	// IdleClose: the probe pool of an address not probed for this long is
	// closed and forgotten (> 0).
	IdleClose time.Duration `yaml:"idle_close" default:"5m" check:"positive"`
}

// Enabled reports whether probes by address are on: some address is allowed.
func (p Probe) Enabled() bool { return len(p.AllowedTargets) > 0 }

// Allowed reports whether hostPort ("host:port", an IPv6 host in brackets)
// matches one of AllowedTargets.
func (p Probe) Allowed(hostPort string) bool {
	hostPort = strings.ToLower(hostPort)
	for _, g := range p.AllowedTargets {
		if globMatch(strings.ToLower(g), hostPort) {
			return true
		}
	}
	return false
}

// Errors of AddressTarget, to be told apart with errors.Is. The error text
// says what was wrong; none of them quotes a secret.
var (
	// ErrAddressProbesOff: probe.allowed_targets is empty.
	ErrAddressProbesOff = errors.New("probes by address are off: list the addresses that may be probed under probe.allowed_targets")
	// ErrAddressNotAllowed: the address matches no probe.allowed_targets.
	ErrAddressNotAllowed = errors.New("address not allowed")
	// ErrBadAddress: the address, kind or database cannot be probed.
	ErrBadAddress = errors.New("bad address")
	// ErrUnknownAuthModule: no auth module of that name.
	ErrUnknownAuthModule = errors.New("unknown auth module")
)

// Compiled once; never modified.
var (
	// hostRE matches a DNS name or an IPv4 address.
	hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	// databaseRE matches the database names an address may name.
	databaseRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$`)
	// portGlobRE matches the port half of an allowed_targets glob.
	portGlobRE = regexp.MustCompile(`^[0-9*?]+$`)
)

// addressDatabase returns the database a probe by address of kind k
// connects to when the address names none, and whether k can be probed
// by address at all. A kind that can be probed by address adds its case
// here; checkDSN then applies the kind's own rules to the connection string.
func addressDatabase(k Kind) (string, bool) {
	switch k {
	case KindPostgres:
		return "postgres", true
	case KindPgBouncer:
		return "pgbouncer", true
	}
	return "", false
}

// managedOptions are the connection parameters an auth module's options may
// not set, with the key to use instead.
var managedOptions = map[string]string{
	"host": "the address in /probe?target=", "hostaddr": "the address in /probe?target=", "port": "the address in /probe?target=",
	"dbname": "the address in /probe?target=HOST:PORT/DATABASE", "database": "the address in /probe?target=HOST:PORT/DATABASE",
	"user": "user", "password": "password_file or password_env", "passfile": "password_file",
	"sslrootcert": "tls.ca_file", "sslcert": "tls.cert_file", "sslkey": "tls.key_file",
	"require_auth": "insecure_password_auth", "service": "", "servicefile": "", "target_session_attrs": "",
	"statement_timeout": "defaults.probe_pool.statement_timeout", "lock_timeout": "defaults.probe_pool.lock_timeout",
}

// resolveProbes checks the auth modules and the probe section, which the
// decoder has filled in.
func (p *parser) resolveProbes() error {
	for _, name := range slices.Sorted(maps.Keys(p.modules)) {
		if err := p.checkModule(name, p.modules[name]); err != nil {
			return err
		}
	}
	for i, g := range p.probe.AllowedTargets {
		o, _ := p.set(joinIndex("probe.allowed_targets", i))
		i := strings.LastIndex(g, ":")
		if i <= 0 || !portGlobRE.MatchString(g[i+1:]) {
			return p.errorAt(o, "%q is not a host:port pattern: write the host and the port, each with * and ? as wildcards, e.g. \"db-*.internal:5432\" or \"[::1]:*\"", g)
		}
	}
	return nil
}

// checkModule checks the auth module name at auth_modules.<name>.
func (p *parser) checkModule(name string, m AuthModule) error {
	mpath := joinKey("auth_modules", name)
	key := p.at[mpath]
	if !targetNameRE.MatchString(name) {
		return p.errorf(key.key, mpath, "invalid auth module name %q: use only letters, digits and _ . : -", name)
	}
	if m.Type != "" && m.Type != "userpass" {
		o, _ := p.set(mpath + ".type")
		return p.errorAt(o, "unsupported auth module type %q: only userpass (postgres_exporter's) is supported", m.Type)
	}
	_, hasUser := p.set(mpath + ".user")
	switch {
	case hasUser && m.UserPass != nil:
		o, _ := p.set(mpath + ".userpass")
		return p.errorAt(o, "the user is given twice (user and userpass.username): keep one")
	case !hasUser && m.UserPass == nil:
		return p.errorf(key.val, mpath+".user", "missing required key")
	}
	inline := m.UserPass != nil && m.UserPass.Password != ""
	file, hasFile := p.set(mpath + ".password_file")
	env, hasEnv := p.set(mpath + ".password_env")
	switch {
	case inline && (hasFile || hasEnv):
		o := file
		if hasEnv {
			o = env
		}
		return p.errorAt(o, "more than one password source (userpass.password and %s): keep one", strings.TrimPrefix(o.path, mpath+"."))
	case hasFile && hasEnv:
		return p.errorAt(env, "more than one password source (password_file and password_env): keep one")
	case hasFile:
		switch empty, err := checkPasswordFile(m.Password.File); {
		case err != nil:
			return &Error{File: p.file, Line: file.line, Path: file.path, Msg: "cannot read password file: " + err.Error(), err: err}
		case empty:
			return p.errorAt(file, "password file %s is empty", m.Password.File)
		}
	case hasEnv && !identRE.MatchString(m.Password.Env):
		return p.errorAt(env, "must be the name of an environment variable (letters, digits and _, not starting with a digit)")
	case hasEnv && os.Getenv(m.Password.Env) == "":
		return p.errorAt(env, "environment variable %q is not set or empty", m.Password.Env)
	}
	for _, k := range slices.Sorted(maps.Keys(m.Options)) {
		o, _ := p.set(joinKey(mpath+".options", k))
		instead, managed := managedOptions[strings.ToLower(k)]
		switch {
		case managed && instead == "":
			return p.errorAt(o, "%s cannot be set for a probe by address", k)
		case managed:
			return p.errorAt(o, "%s cannot be set under options: use %s", k, instead)
		case strings.HasPrefix(strings.ToLower(k), "pool_"):
			return p.errorAt(o, "%s cannot be set under options: pool settings belong under defaults.probe_pool", k)
		case strings.EqualFold(k, "sslmode") && m.SSLMode != "":
			return p.errorAt(o, "sslmode is set twice (sslmode and options.sslmode): keep one")
		}
	}
	// The connection string of a probe by this module must parse as the
	// probe pool will parse it, TLS files included.
	dsn := m.dsn("localhost:5432", "postgres")
	info, msg := checkDSN(dsn, KindPostgres)
	if msg != "" {
		o, ok := p.set(mpath + ".sslmode")
		if !ok {
			o, ok = p.set(mpath + ".options")
		}
		if !ok {
			o = origin{path: mpath, line: key.key}
		}
		return p.errorAt(o, "%s", strings.Replace(msg, "DSN", "connection string", 1))
	}
	for _, tf := range tlsFiles(m.TLS) {
		if tf.path == "" {
			continue
		}
		o, _ := p.set(mpath + "." + tf.key)
		if !info.usesTLS {
			return p.errorAt(o, "%s is set but sslmode=disable never uses TLS", tf.key)
		}
		f, _, err := openRegular(tf.path)
		if err != nil {
			return &Error{File: p.file, Line: o.line, Path: o.path, Msg: "cannot read file: " + err.Error(), err: err}
		}
		_ = f.Close()
	}
	switch {
	case m.TLS.CertFile != "" && m.TLS.KeyFile == "":
		o, _ := p.set(mpath + ".tls.cert_file")
		return p.errorAt(o, "cert_file needs key_file too")
	case m.TLS.KeyFile != "" && m.TLS.CertFile == "":
		o, _ := p.set(mpath + ".tls.key_file")
		return p.errorAt(o, "key_file needs cert_file too")
	}
	return nil
}

// dsn returns the connection string of a probe of hostPort and database by
// module m: a postgres:// URL whose user, host, port and database are the
// module's and the address's, whatever the options say, with the module's
// sslmode and options, and require_auth refusing a password in clear or as
// MD5 unless InsecurePasswordAuth. It contains UserPass.Password, if any:
// never log it.
func (m AuthModule) dsn(hostPort, database string) string {
	u := url.URL{Scheme: "postgres", Host: hostPort, Path: "/" + database}
	if m.UserPass != nil && m.UserPass.Password != "" {
		u.User = url.UserPassword(m.user(), m.UserPass.Password)
	} else {
		u.User = url.User(m.user())
	}
	q := url.Values{}
	for k, v := range m.Options {
		q.Set(k, v)
	}
	if m.SSLMode != "" {
		q.Set("sslmode", m.SSLMode)
	}
	if !m.InsecurePasswordAuth {
		q.Set("require_auth", "!password,!md5")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// AuthModules returns the names of the auth modules, sorted.
func (c *Config) AuthModules() []string {
	if c == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(c.modules))
}

// Probe returns the probe section (a copy).
func (c *Config) Probe() Probe {
	if c == nil {
		return Probe{}
	}
	p := c.probe
	p.AllowedTargets = slices.Clone(p.AllowedTargets)
	return p
}

// AddressTarget returns the target that /probe?target=ADDRESS&kind=KIND
// &auth_module=MODULE scrapes: the defaults merged in as for a configured
// target, the auth module's user, password source, TLS settings and
// options, and the address's host, port and database. kind "" means
// postgres. address is HOST:PORT or HOST:PORT/DATABASE (an IPv6 host in
// brackets); without a database, a postgres target connects to
// "postgres" and a pgbouncer target to its admin console.
//
// The target's Name is the canonical address, HOST:PORT/DATABASE with the
// host in lower case: the value of its `target` label.
//
// The error wraps ErrAddressProbesOff, ErrAddressNotAllowed, ErrBadAddress
// or ErrUnknownAuthModule, and its text says which setting to change.
func (c *Config) AddressTarget(kind Kind, module, address string) (Target, error) {
	if c == nil || !c.probe.Enabled() {
		return Target{}, ErrAddressProbesOff
	}
	if kind == "" {
		kind = KindPostgres
	}
	defaultDB, ok := addressDatabase(kind)
	if !ok {
		return Target{}, fmt.Errorf("%w: kind %q cannot be probed by address", ErrBadAddress, kind)
	}
	hostPort, db, err := parseAddress(address)
	if err != nil {
		return Target{}, err
	}
	if !c.probe.Allowed(hostPort) {
		return Target{}, fmt.Errorf("%w: %s matches none of probe.allowed_targets (%s)", ErrAddressNotAllowed, hostPort, strings.Join(c.probe.AllowedTargets, ", "))
	}
	m, ok := c.modules[module]
	switch {
	case module == "":
		return Target{}, fmt.Errorf("%w: a probe by address needs auth_module=NAME (configured: %s)", ErrUnknownAuthModule, strings.Join(c.AuthModules(), ", "))
	case !ok:
		return Target{}, fmt.Errorf("%w %q (configured: %s)", ErrUnknownAuthModule, module, strings.Join(c.AuthModules(), ", "))
	}
	if db == "" {
		db = defaultDB
	}
	dsn := m.dsn(hostPort, db)
	if _, msg := checkDSN(dsn, kind); msg != "" {
		return Target{}, fmt.Errorf("%w: %s", ErrBadAddress, msg)
	}
	t := c.defaults.clone()
	t.Name, t.Kind, t.DSN = hostPort+"/"+db, kind, dsn
	t.Password, t.TLS = m.Password, m.TLS
	t.derive()
	return t, nil
}

// parseAddress splits HOST:PORT[/DATABASE], checks each part and returns
// the canonical host:port (lower case, IPv6 in brackets) and the database.
func parseAddress(address string) (hostPort, db string, err error) {
	hp, db, _ := strings.Cut(address, "/")
	bad := func(format string, args ...any) (string, string, error) {
		return "", "", fmt.Errorf("%w: "+format, append([]any{ErrBadAddress}, args...)...)
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return bad("%q is not HOST:PORT[/DATABASE]", address)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port != strconv.Itoa(n) {
		return bad("invalid port %q", port)
	}
	switch ip := net.ParseIP(host); {
	case ip != nil && strings.Contains(host, ":") && !strings.HasPrefix(hp, "["):
		return bad("write an IPv6 address in brackets: [%s]:%s", host, port)
	case ip == nil && (!hostRE.MatchString(host) || len(host) > 253):
		return bad("invalid host %q", host)
	}
	if db != "" && !databaseRE.MatchString(db) {
		return bad("invalid database name %q: use letters, digits and _ . -", db)
	}
	return net.JoinHostPort(strings.ToLower(host), port), db, nil
}

// globMatch matches s against a glob where * matches any run of characters
// and ? any single one; every other character matches itself.
func globMatch(glob, s string) bool {
	// Iterative matching with backtracking to the last *.
	g, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case g < len(glob) && (glob[g] == '?' || glob[g] == s[i]):
			g++
			i++
		case g < len(glob) && glob[g] == '*':
			star, mark = g, i
			g++
		case star >= 0:
			g, mark = star+1, mark+1
			i = mark
		default:
			return false
		}
	}
	for g < len(glob) && glob[g] == '*' {
		g++
	}
	return g == len(glob)
}
