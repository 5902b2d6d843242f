package config

import (
	"fmt"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// This file is the one place that parses, rewrites and redacts a DSN.
//
// Parsing is pgx's own (pgx.ParseConfig), which is what the probe pool uses.
// pgx does not serve for one question: which keys the DSN itself writes.
// ParseConfig merges in the PG* environment variables, the passfile and its
// defaults, and turns the TLS file names into a tls.Config, while validation
// must tell a password written in the DSN from PGPASSWORD, and a
// sslrootcert written in the DSN from tls.ca_file; its readers of the two
// forms are unexported, and ParseConfigOptions.ConnStringAllowedKeys names
// only one rejected key, in an error text. dsnSettings answers it, on DSNs
// that pgx has already accepted, following pgx's (and libpq's) rules:
// splitURL for URLs, kvPairRE for keyword/value strings.

// redactMask replaces a password in redacted text.
const redactMask = "xxxxx"

// Compiled once; never modified.
var (
	// schemeRE matches a URL scheme at the start of a DSN.
	schemeRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*)://`)
	// kvPairRE matches one key=value pair of a keyword/value string, the
	// value single-quoted or bare, with backslash escapes, as libpq and pgx
	// read them.
	kvPairRE   = regexp.MustCompile(`([^\s=]+)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s\\]|\\.)*)`)
	kvEscapeRE = regexp.MustCompile(`(?s)\\(.)`)
	// secretKVRE, secretParamRE and secretURLRE match a password in free
	// text (its last group): the value of a [ssl]password keyword that is
	// not a URL parameter (quoted, or up to the next white space), any URL
	// query parameter (RedactSecrets masks those whose decoded name is a
	// password's), and the userinfo of a URL after the user name, up to the
	// last "@" before white space.
	secretKVRE    = regexp.MustCompile(`(?i)(^|[^\w?&%])((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:[^\s\\]|\\.)+)`)
	secretParamRE = regexp.MustCompile(`([?&][^=&\s]*=)([^&\s]*)`)
	secretURLRE   = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(\S*)@`)
	// dsnUserinfoRE is secretURLRE for a DSN on its own, where white space
	// does not end the URL.
	dsnUserinfoRE = regexp.MustCompile(`(?s)^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:)(.*)@`)
)

// dsnInfo is what validation learnt about a valid DSN.
type dsnInfo struct {
	// settings are the keys written in the DSN itself (not from the
	// environment or defaults), with their values.
	settings map[string]string
	// usesTLS is false when no connection attempt can use TLS
	// (sslmode=disable, or a Unix socket).
	usesTLS bool
}

// hasPassword reports whether the DSN itself carries a non-empty password.
func (d dsnInfo) hasPassword() bool { return d.settings["password"] != "" }

// checkDSN validates dsn for a target of the given kind. It parses the DSN
// with pgx.ParseConfig, exactly as the probe pool will, and then applies
// poolwatch's own rules:
//
//   - a URL must use the scheme postgres:// or postgresql://; keyword/value
//     strings ("host=db1 user=poolwatch") are accepted when pgx accepts them;
//   - one target is one server: a DSN that lists several hosts is rejected;
//   - pgxpool's pool_* keys and statement_timeout/lock_timeout are rejected:
//     the probe_pool keys set those;
//   - a pgbouncer target must connect to the admin console database
//     "pgbouncer".
//
// Like pgx, it takes PG* environment variables into account. The message it
// returns never contains the DSN or its password.
func checkDSN(dsn string, kind Kind) (dsnInfo, string) {
	if m := schemeRE.FindStringSubmatch(dsn); m != nil && m[1] != "postgres" && m[1] != "postgresql" {
		return dsnInfo{}, fmt.Sprintf("unsupported DSN scheme %q: use postgres:// or postgresql://, or a keyword/value string", m[1])
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return dsnInfo{}, "invalid DSN: " + pgxReason(err, dsn)
	}
	settings := dsnSettings(dsn)
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		if strings.HasPrefix(k, "pool_") {
			return dsnInfo{}, fmt.Sprintf("the DSN sets %s: pool settings belong under probe_pool", k)
		}
		if k == "statement_timeout" || k == "lock_timeout" {
			return dsnInfo{}, fmt.Sprintf("the DSN sets %s: use probe_pool.%s", k, k)
		}
	}
	type hostPort struct {
		host string
		port uint16
	}
	hosts := map[hostPort]bool{{cfg.Host, cfg.Port}: true}
	usesTLS := cfg.TLSConfig != nil
	for _, fb := range cfg.Fallbacks {
		hosts[hostPort{fb.Host, fb.Port}] = true
		usesTLS = usesTLS || fb.TLSConfig != nil
	}
	if strings.ContainsRune(cfg.Host, '@') {
		// Never quote the host here: it holds part of the password.
		return dsnInfo{}, `invalid DSN: the host contains "@": percent-encode "@" in a password as %40`
	}
	if len(hosts) > 1 {
		return dsnInfo{}, fmt.Sprintf("the DSN lists %d hosts: a target is one server, give each its own target", len(hosts))
	}
	if dbs := kind.AdminDatabases(); len(dbs) > 0 && !slices.Contains(dbs, cfg.Database) {
		want := make([]string, len(dbs))
		for i, d := range dbs {
			want[i] = strconv.Quote(d)
		}
		return dsnInfo{}, fmt.Sprintf("a %s target connects to the admin console: the DSN's database must be %s, not %q", kind, strings.Join(want, " or "), cfg.Database)
	}
	return dsnInfo{settings: settings, usesTLS: usesTLS}, ""
}

// pgxReason extracts the reason from the error of pgx.ParseConfig(dsn),
// whose text is "cannot parse `<best-effort redacted DSN>`: <reason>". Only
// the part after the last "`: " is kept, so nothing of the DSN itself
// survives, and the reason (which can quote a value of the DSN) is cleared
// of everything in dsn that RedactSecrets would mask, as written, unquoted
// and percent-decoded. An error of another shape is not quoted at all.
func pgxReason(err error, dsn string) string {
	s := err.Error()
	i := strings.LastIndex(s, "`: ")
	if i < 0 {
		return "pgx cannot parse it"
	}
	s = s[i+len("`: "):]
	for _, re := range []*regexp.Regexp{dsnUserinfoRE, secretKVRE, secretParamRE} {
		for _, m := range re.FindAllStringSubmatch(dsn, -1) {
			if re == secretParamRE && !isPasswordParam(m[1]) {
				continue
			}
			sec := m[len(m)-1]
			for _, sec := range []string{sec, strings.Trim(sec, "'"), unescape(sec)} {
				if sec != "" {
					s = strings.ReplaceAll(s, sec, redactMask)
				}
			}
		}
	}
	return s
}

// unescape percent-decodes s, or returns it as it is if it does not decode.
func unescape(s string) string {
	if d, err := url.PathUnescape(s); err == nil {
		return d
	}
	return s
}

// dsnSettings returns the keys that a DSN accepted by pgx writes itself,
// with their values as pgx reads them (see the top of this file).
func dsnSettings(dsn string) map[string]string {
	settings := map[string]string{}
	if !schemeRE.MatchString(dsn) {
		for _, m := range kvPairRE.FindAllStringSubmatch(dsn, -1) {
			if v := m[2]; strings.HasPrefix(v, "'") {
				m[2] = v[1 : len(v)-1]
			}
			settings[m[1]] = kvEscapeRE.ReplaceAllString(m[2], "$1")
		}
		return settings
	}
	userinfo, rest := splitURL(dsn)
	if _, pw, ok := strings.Cut(userinfo, ":"); ok {
		settings["password"] = unescape(pw)
	}
	if _, query, ok := strings.Cut(rest, "?"); ok {
		for _, pair := range strings.Split(query, "&") {
			k, v, _ := strings.Cut(pair, "=")
			settings[unescape(k)] = unescape(v)
		}
	}
	return settings
}

// DSNReadsFiles reports whether parsing dsn with pgx can read a file whose
// content may change while the agent runs: a TLS file (sslrootcert,
// sslcert, sslkey), a service file (service) or a password file (passfile,
// or ~/.pgpass, which pgx reads when the DSN has no password and withPassword
// is false), whether named in the DSN or by the PG* variables pgx reads.
// The probe pool parses such a DSN afresh for every new connection, and
// any other DSN once.
func DSNReadsFiles(dsn string, withPassword bool) bool {
	settings := dsnSettings(dsn)
	for _, k := range []string{"sslrootcert", "sslcert", "sslkey", "service", "passfile"} {
		if settings[k] != "" {
			return true
		}
	}
	for _, env := range []string{"PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSERVICE", "PGSERVICEFILE", "PGPASSFILE"} {
		if os.Getenv(env) != "" {
			return true
		}
	}
	return settings["password"] == "" && !withPassword && os.Getenv("PGPASSWORD") == ""
}

// splitURL returns the userinfo of a URL DSN and what follows it, as pgx
// (like libpq) reads them: the userinfo ends at the first "@" that comes
// before any "/".
func splitURL(dsn string) (userinfo, rest string) {
	rest = dsn[len(schemeRE.FindString(dsn)):]
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		return rest[:i], rest[i+1:]
	}
	return "", rest
}

// RedactDSN returns dsn, a URL or a keyword/value string, with every
// password replaced by "xxxxx": the userinfo password and the password and
// sslpassword parameters of a URL, and the password and sslpassword keys of
// a keyword/value string. It is for logs and messages, and it errs on the
// side of hiding: in a malformed DSN whose structure is ambiguous it masks
// everything that could be a password, which can hide more than the
// password. It is RedactSecrets, except that white space does not end a URL.
func RedactDSN(dsn string) string {
	return RedactSecrets(dsnUserinfoRE.ReplaceAllString(dsn, "${1}"+redactMask+"@"))
}

// RedactSecrets returns text, an error message or a log line that may quote
// connection strings, with every password replaced by "xxxxx": the value of
// a password or sslpassword keyword (quoted, or up to the next white space)
// or URL parameter (its name percent-decoded), and the password in a URL's
// userinfo (up to the last "@" before white space).
func RedactSecrets(text string) string {
	// Each expression needs a mark that most texts lack (a scheme's "://",
	// the word password, a URL query's ? or &): skip it then, since
	// redaction runs on every failed connect's error.
	if strings.Contains(text, "://") {
		text = secretURLRE.ReplaceAllString(text, "${1}"+redactMask+"@")
	}
	// (?i) also folds some non-ASCII letters into ASCII ones (ſ into s):
	// such text always takes the regular expression.
	if strings.Contains(strings.ToLower(text), "password") || !isASCII(text) {
		text = secretKVRE.ReplaceAllString(text, "${1}${2}"+redactMask)
	}
	if !strings.ContainsAny(text, "?&") {
		return text
	}
	return secretParamRE.ReplaceAllStringFunc(text, func(param string) string {
		if m := secretParamRE.FindStringSubmatch(param); isPasswordParam(m[1]) {
			return m[1] + redactMask
		}
		return param
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// isPasswordParam reports whether "?name=" or "&name=" starts a URL
// parameter that holds a password.
func isPasswordParam(start string) bool {
	k := strings.ToLower(unescape(start[1 : len(start)-1]))
	return k == "password" || k == "sslpassword"
}

// RedactError returns an error whose text is err's passed through
// RedactSecrets, and which unwraps to err; nil for nil.
func RedactError(err error) error {
	if err == nil {
		return nil
	}
	return redactedError{err}
}

type redactedError struct{ err error }

func (e redactedError) Error() string { return RedactSecrets(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }

// ConnString returns the DSN with the target's TLS files added, in the DSN's
// own form: as sslrootcert, sslcert and sslkey parameters appended to the
// query of a URL (percent-encoded; the rest of the DSN is left as written),
// or as quoted key='value' pairs appended to a keyword/value string. Without
// TLS files it returns the DSN unchanged. The probe pool connects with it.
// It contains the DSN's password: never log it.
func (t Target) ConnString() string {
	var b strings.Builder
	b.WriteString(t.DSN)
	_, rest := splitURL(t.DSN)
	sep := "&"
	switch {
	case !schemeRE.MatchString(t.DSN):
		sep = " "
	case !strings.Contains(rest, "?"):
		sep = "?"
	case strings.HasSuffix(rest, "?") || strings.HasSuffix(rest, "&"):
		sep = ""
	}
	for _, f := range tlsFiles(t.TLS) {
		switch {
		case f.path == "":
			continue
		case sep == " ":
			fmt.Fprintf(&b, " %s='%s'", f.dsnKey, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(f.path))
		default:
			// QueryEscape writes a space as "+", which pgx, like libpq, reads
			// as a "+".
			fmt.Fprintf(&b, "%s%s=%s", sep, f.dsnKey, strings.ReplaceAll(url.QueryEscape(f.path), "+", "%20"))
			sep = "&"
		}
	}
	return b.String()
}
