package config

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// redactMask replaces a password in RedactDSN's output.
const redactMask = "xxxxx"

// schemeRE matches a URL scheme at the start of a DSN.
var schemeRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*)://`)

// dsnForm is the syntax a DSN is written in.
type dsnForm int

const (
	formKeywordValue dsnForm = iota
	formURL
)

func formOf(dsn string) dsnForm {
	if schemeRE.MatchString(dsn) {
		return formURL
	}
	return formKeywordValue
}

// dsnInfo is what validation learnt about a valid DSN.
type dsnInfo struct {
	// settings are the keys written in the DSN itself (not from the
	// environment or defaults), with libpq's dbname as "database".
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
	if dsn == "" {
		return dsnInfo{}, "must not be empty"
	}
	if m := schemeRE.FindStringSubmatch(dsn); m != nil && m[1] != "postgres" && m[1] != "postgresql" {
		return dsnInfo{}, fmt.Sprintf("unsupported DSN scheme %q: use postgres:// or postgresql://, or a keyword/value string", m[1])
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return dsnInfo{}, "invalid DSN: " + pgxReason(err, passwordCandidates(dsn))
	}
	settings, err := dsnSettings(dsn)
	if err != nil {
		// pgx accepted it, so this is a disagreement between the two parsers.
		return dsnInfo{}, "invalid DSN: " + err.Error()
	}
	for k := range settings {
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
	if kind == KindPgBouncer && cfg.Database != "pgbouncer" {
		return dsnInfo{}, fmt.Sprintf("a pgbouncer target connects to the admin console: the DSN's database must be \"pgbouncer\", not %q", cfg.Database)
	}
	return dsnInfo{settings: settings, usesTLS: usesTLS}, ""
}

// pgxReason extracts the reason from a pgx ParseConfig error, whose text is
// "cannot parse `<best-effort redacted DSN>`: <reason>". Only the part after
// the last "`: " is kept, so nothing of the DSN itself survives, and any
// password candidate is masked in it as well. An error of another shape is
// not quoted at all.
func pgxReason(err error, secrets []string) string {
	s := err.Error()
	i := strings.LastIndex(s, "`: ")
	if i < 0 {
		return "pgx cannot parse it"
	}
	s = s[i+len("`: "):]
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, redactMask)
		}
	}
	return s
}

// passwordCandidates returns every string in dsn that might be a password,
// generously, for masking error texts of DSNs that did not parse.
func passwordCandidates(dsn string) []string {
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		out = append(out, s)
		if d, err := url.PathUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
	}
	if formOf(dsn) == formURL {
		rest := dsn[len(schemeRE.FindString(dsn)):]
		if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
			if _, pw, ok := strings.Cut(rest[:i], ":"); ok {
				add(pw)
			}
		}
		// A password with an unencoded '/', '?' or '@' strands the userinfo:
		// everything between the first ':' and the last '@' may be secret.
		if last := strings.LastIndexByte(rest, '@'); last >= 0 {
			if _, pw, ok := strings.Cut(rest[:last], ":"); ok {
				add(pw)
			}
		}
		for _, seg := range strings.FieldsFunc(rest, func(r rune) bool { return r == '?' || r == '&' }) {
			if k, v, ok := strings.Cut(seg, "="); ok && isPasswordKey(unescapeOr(k)) {
				add(v)
			}
		}
		return out
	}
	toks, _ := tokenizeKV(dsn)
	for _, t := range toks {
		if isPasswordKey(t.key) {
			add(t.val)
			add(dsn[t.valStart:t.valEnd])
		}
	}
	// An unterminated quote or similar: everything after "password" may be
	// secret.
	if i := strings.Index(strings.ToLower(dsn), "password"); i >= 0 {
		if _, v, ok := strings.Cut(dsn[i:], "="); ok {
			add(strings.TrimLeft(v, " \t\n\r\v\f'"))
		}
	}
	return out
}

func isPasswordKey(k string) bool {
	k = strings.ToLower(k)
	return k == "password" || k == "sslpassword"
}

func unescapeOr(s string) string {
	if d, err := url.PathUnescape(s); err == nil {
		return d
	}
	return s
}

// kvToken is one key=value pair of a keyword/value DSN.
type kvToken struct {
	key, val         string
	valStart, valEnd int // the raw value, quotes included, is dsn[valStart:valEnd]
}

// tokenizeKV splits a keyword/value connection string following libpq's
// (and pgx's) rules: whitespace-separated key = value pairs, a value either
// bare with backslash escapes or single-quoted with backslash escapes. It
// returns the tokens read before any error.
func tokenizeKV(s string) ([]kvToken, error) {
	const space = " \t\n\r\v\f"
	var toks []kvToken
	i := 0
	skip := func() {
		for i < len(s) && strings.IndexByte(space, s[i]) >= 0 {
			i++
		}
	}
	skip()
	for i < len(s) {
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			return toks, errors.New("invalid keyword/value: missing \"=\"")
		}
		key := strings.Trim(s[i:i+eq], space)
		if key == "" || strings.ContainsAny(key, space) {
			return toks, errors.New("invalid keyword/value: bad key")
		}
		i += eq + 1
		skip()
		start := i
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			for {
				if i >= len(s) {
					return toks, errors.New("unterminated quoted string")
				}
				c := s[i]
				if c == '\'' {
					i++
					break
				}
				if c == '\\' {
					i++
					if i >= len(s) {
						return toks, errors.New("unterminated quoted string")
					}
					c = s[i]
				}
				val.WriteByte(c)
				i++
			}
		} else {
			for i < len(s) && strings.IndexByte(space, s[i]) < 0 {
				c := s[i]
				if c == '\\' {
					i++
					if i >= len(s) {
						break
					}
					c = s[i]
				}
				val.WriteByte(c)
				i++
			}
		}
		if key == "dbname" {
			key = "database"
		}
		toks = append(toks, kvToken{key: key, val: val.String(), valStart: start, valEnd: i})
		skip()
	}
	return toks, nil
}

// dsnSettings returns the settings written in a DSN that pgx accepted, in
// pgx's spelling (dbname becomes database). It ignores the environment.
func dsnSettings(dsn string) (map[string]string, error) {
	settings := map[string]string{}
	if formOf(dsn) == formKeywordValue {
		toks, err := tokenizeKV(dsn)
		if err != nil {
			return nil, err
		}
		for _, t := range toks {
			if t.key == "user" && t.val == "" {
				continue
			}
			settings[t.key] = t.val
		}
		return settings, nil
	}
	rest := dsn[len(schemeRE.FindString(dsn)):]
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		user, pw, hasPW := strings.Cut(rest[:i], ":")
		rest = rest[i+1:]
		if user != "" {
			settings["user"] = unescapeOr(user)
		}
		if hasPW && pw != "" {
			settings["password"] = unescapeOr(pw)
		}
	}
	hostPart, query, _ := strings.Cut(rest, "?")
	hosts, db, _ := strings.Cut(hostPart, "/")
	if hosts != "" {
		settings["host"] = unescapeOr(hosts)
	}
	if db != "" {
		settings["database"] = unescapeOr(db)
	}
	if query != "" {
		for _, pair := range strings.Split(query, "&") {
			k, v, ok := strings.Cut(pair, "=")
			if !ok {
				return nil, errors.New("invalid URL query parameter")
			}
			k = unescapeOr(k)
			if k == "dbname" {
				k = "database"
			}
			settings[k] = unescapeOr(v)
		}
	}
	return settings, nil
}

// RedactDSN returns dsn with every password replaced by "xxxxx": the
// userinfo password and the password and sslpassword parameters of a URL,
// and the password and sslpassword keys of a keyword/value string. It is for
// logs and messages, and it errs on the side of hiding: in a malformed DSN
// whose structure is ambiguous it masks everything that could be a password,
// which can hide more than the password.
func RedactDSN(dsn string) string {
	if formOf(dsn) == formURL {
		return redactURL(dsn)
	}
	return redactKV(dsn)
}

func redactURL(dsn string) string {
	prefix := schemeRE.FindString(dsn)
	rest := dsn[len(prefix):]
	var b strings.Builder
	b.WriteString(prefix)
	if last := strings.LastIndexByte(rest, '@'); last >= 0 {
		first := strings.IndexAny(rest, "@/")
		if first == last {
			// One '@' and it ends the userinfo: the structure is clear.
			user, _, hasPW := strings.Cut(rest[:last], ":")
			b.WriteString(user)
			if hasPW {
				b.WriteString(":" + redactMask)
			}
		} else {
			// A stray '@' (or a password with an unencoded '/' or '@')
			// makes the userinfo ambiguous: mask everything up to the last
			// '@'.
			b.WriteString(redactMask)
		}
		b.WriteByte('@')
		rest = rest[last+1:]
	}
	// Mask password parameters wherever a "?" or "&" starts one.
	for {
		i := strings.IndexAny(rest, "?&")
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i+1])
		rest = rest[i+1:]
		end := strings.IndexAny(rest, "?&")
		if end < 0 {
			end = len(rest)
		}
		if k, _, ok := strings.Cut(rest[:end], "="); ok && isPasswordKey(unescapeOr(k)) {
			b.WriteString(k + "=" + redactMask)
			rest = rest[end:]
		}
	}
	return b.String()
}

func redactKV(dsn string) string {
	toks, err := tokenizeKV(dsn)
	var b strings.Builder
	pos := 0
	for _, t := range toks {
		if isPasswordKey(t.key) {
			b.WriteString(dsn[pos:t.valStart])
			b.WriteString(redactMask)
			pos = t.valEnd
		}
	}
	tail := dsn[pos:]
	if err != nil {
		// Malformed after the last good token: hide everything from a
		// "password" onwards.
		if i := strings.Index(strings.ToLower(tail), "password"); i >= 0 {
			tail = tail[:i] + "password=" + redactMask
		}
	}
	b.WriteString(tail)
	return b.String()
}
