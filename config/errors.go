package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// RootPath is the path that an Error names when it is about the file as a
// whole rather than one key: an empty file, a YAML syntax error, or a root
// that is not a mapping.
const RootPath = "(root)"

// Error is a configuration error located in the configuration file. Its text
// is one line of the form
//
//	<file>:<line>: <path>: <message>
//
// for example
//
//	poolwatch.yml:7: targets[1].name: duplicate target name "db1" (first defined at line 3)
//
// Path is the YAML path of the offending key (defaults.probe_pool.max_connections,
// targets[1].labels.team, targets[0].application_pools[2].name) or RootPath.
// Line is 1-based; it is 1 when the YAML parser reports a syntax error without
// a line. The text never contains a password, and Unwrap never returns an
// error that could contain one.
type Error struct {
	File string
	Line int
	Path string
	Msg  string
	err  error
}

// Error returns the one-line error text.
func (e *Error) Error() string {
	msg := strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(e.Msg)
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Path, msg)
}

// Unwrap returns the underlying cause, if any (for example an *fs.PathError
// when a password file cannot be opened).
func (e *Error) Unwrap() error { return e.err }

// identRE matches a key that can be written after a dot in a path; label
// names and environment variable names have the same syntax.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// joinKey returns the path of key under the mapping at path.
func joinKey(path, key string) string {
	if !identRE.MatchString(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" || path == RootPath {
		return key
	}
	return path + "." + key
}

// joinIndex returns the path of item i of the sequence at path.
func joinIndex(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
