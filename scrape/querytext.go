package scrape

import "strings"

// RedactQuery returns SQL text with every string literal, dollar-quoted
// string and comment replaced, so that a culprit's query can be logged
// (log_query_text) without the secrets such places hold: a PASSWORD '…' of
// CREATE or ALTER ROLE, a SCRAM verifier, a dblink connection string, a
// pgcrypto key. Literals become '***' (their prefix, E, U& or B, is kept),
// dollar-quoted strings $$***$$, comments /***/. Identifiers, keywords,
// numbers and parameters ($1) are kept.
//
// It errs on the side of hiding: a standard literal holding a backslash
// (whose end depends on standard_conforming_strings, which the agent cannot
// see) hides the rest of the text; and a literal, dollar quote or comment
// left open, as when the text was cut at MaxQueryLength, is redacted to the
// end.
func RedactQuery(q string) string {
	var b strings.Builder
	b.Grow(len(q))
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'':
			b.WriteString("'***'")
			i = skipQuoted(q, i+1, false)
		case c == '"':
			j := strings.IndexByte(q[i+1:], '"')
			if j < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+j+2]) // a quoted identifier, kept
			i += j + 2
		case c == '-' && strings.HasPrefix(q[i:], "--"):
			b.WriteString("/***/")
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				return b.String()
			}
			i += j
		case c == '/' && strings.HasPrefix(q[i:], "/*"):
			b.WriteString("/***/")
			i = skipBlockComment(q, i+2)
		case c == '$':
			if tag, ok := dollarTag(q[i:]); ok {
				b.WriteString("$$***$$")
				j := strings.Index(q[i+len(tag):], tag)
				if j < 0 {
					return b.String()
				}
				i += len(tag) + j + len(tag)
				continue
			}
			b.WriteByte(c)
			i++
		case isIdentStart(c):
			// A whole word at once, so that a $ inside one (x$1) is not
			// taken for a dollar quote.
			j := i + 1
			for j < len(q) && isIdentPart(q[j]) {
				j++
			}
			b.WriteString(q[i:j])
			if j < len(q) && q[j] == '\'' && (q[i:j] == "E" || q[i:j] == "e") {
				b.WriteString("'***'")
				j = skipQuoted(q, j+1, true)
			}
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// skipQuoted returns the index after the literal whose opening quote is
// just before i, where ” stands for a quote. In an escape string (E'…') a
// backslash escapes the next character. In a standard one it does only
// with standard_conforming_strings off, which the agent cannot see: a
// backslash there makes the end of the literal uncertain, so the rest of
// the text counts as the literal.
func skipQuoted(q string, i int, escapes bool) int {
	for i < len(q) {
		switch q[i] {
		case '\\':
			if !escapes {
				return len(q)
			}
			i += 2
		case '\'':
			if i+1 < len(q) && q[i+1] == '\'' {
				i += 2
				continue
			}
			return i + 1
		default:
			i++
		}
	}
	return len(q)
}

// skipBlockComment returns the index after the comment that opened just
// before i; comments nest, as in PostgreSQL.
func skipBlockComment(q string, i int) int {
	depth := 1
	for i < len(q) {
		switch {
		case strings.HasPrefix(q[i:], "/*"):
			depth++
			i += 2
		case strings.HasPrefix(q[i:], "*/"):
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return len(q)
}

// dollarTag returns the opening tag of a dollar-quoted string at the start
// of s ("$$" or "$tag$"), if there is one: a tag does not start with a
// digit ($1 is a parameter).
func dollarTag(s string) (string, bool) {
	if len(s) < 2 {
		return "", false
	}
	if s[1] == '$' {
		return "$$", true
	}
	if !isIdentStart(s[1]) {
		return "", false
	}
	for j := 2; j < len(s); j++ {
		switch {
		case s[j] == '$':
			return s[:j+1], true
		case !isIdentPart(s[j]):
			return "", false
		}
	}
	return "", false
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isIdentPart(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}
