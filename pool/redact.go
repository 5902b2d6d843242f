package pool

import "regexp"

// redactSecrets removes passwords from text that might quote a connection
// string: the keyword/value form password=..., and the URL form
// scheme://user:password@host.
func redactSecrets(s string) string {
	kv := regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
	s = kv.ReplaceAllString(s, "${1}xxxxx")
	url := regexp.MustCompile(`(://[^:/@\s]*:)[^@\s]*@`)
	return url.ReplaceAllString(s, "${1}xxxxx@")
}
