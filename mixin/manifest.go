package mixin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The shipped rule files and dashboards are written in the two manifest
// formats of jsonnet's standard library, so that mixin.libsonnet renders
// them byte for byte (its renderedFiles field):
//
//   - a rule file is its header comment, then
//     std.manifestYamlDoc(file, indent_array_in_object=true, quote_keys=false)
//     and a newline;
//   - a dashboard is std.manifestJsonEx(dashboard, '  ') and a newline.
//
// ManifestYAMLDoc and ManifestJSONEx below are ports of go-jsonnet v0.22.0's
// builtins (builtins.go: builtinManifestYamlDoc, builtinManifestJSONEx) for
// the plain values encoding/json decodes: map[string]any, []any, string,
// float64, bool and nil. Object keys are sorted, as jsonnet sorts fields.
// conformance/jsonnet checks the two against go-jsonnet itself, on the
// shipped files and on values chosen to reach every branch.

// yamlIndent is manifestYamlDoc's indentation step.
const yamlIndent = "  "

var (
	// yamlReserved, yamlTimestampPattern, yamlBinaryPattern and
	// yamlHexPattern are go-jsonnet's, verbatim: a key matching them is
	// quoted (yamlHexPattern is unanchored there too).
	yamlReserved = []string{
		"true", "false", "yes", "no", "on", "off", "y", "n",
		".nan", "-.inf", "+.inf", ".inf", "null",
		"-", "---", "''",
	}
	yamlTimestampPattern = regexp.MustCompile(`^(?:[0-9]*-){2}[0-9]*$`)
	yamlBinaryPattern    = regexp.MustCompile(`^[-+]?0b[0-1_]+$`)
	yamlHexPattern       = regexp.MustCompile(`[-+]?0x[0-9a-fA-F_]+`)
)

// yamlBareSafe reports whether manifestYamlDoc writes the key s unquoted
// (with quote_keys=false).
func yamlBareSafe(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		isAlpha := (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
		isDigit := c >= '0' && c <= '9'
		if !isAlpha && !isDigit && c != '_' && c != '-' && c != '/' && c != '.' {
			return false
		}
	}
	for _, r := range yamlReserved {
		if strings.EqualFold(s, r) {
			return false
		}
	}
	if yamlTimestampPattern.MatchString(s) || yamlBinaryPattern.MatchString(s) || yamlHexPattern.MatchString(s) {
		return false
	}
	if _, err := strconv.Atoi(s); err == nil {
		return false
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return false
	}
	return true
}

// quoteJsonnet is go-jsonnet's unparseString (YAML string values) and,
// with the same escapes, its escapeStringJson (quoted YAML keys).
func quoteJsonnet(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 || (c >= 0x7f && c <= 0x9f) {
				fmt.Fprintf(&b, `\u%04x`, c)
			} else {
				b.WriteRune(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// formatNumber is how jsonnet writes a number in both formats.
func formatNumber(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// ManifestYAMLDoc is std.manifestYamlDoc(v, indent_array_in_object=true,
// quote_keys=false) of go-jsonnet v0.22.0, without a final newline, for a
// plain value (as encoding/json decodes it).
func ManifestYAMLDoc(v any) (string, error) {
	var buf bytes.Buffer
	if err := yamlDoc(&buf, v, ""); err != nil {
		return "", err
	}
	return buf.String(), nil
}

func yamlDoc(buf *bytes.Buffer, v any, cindent string) error {
	switch v := v.(type) {
	case nil:
		buf.WriteString("null")
	case bool:
		buf.WriteString(strconv.FormatBool(v))
	case string:
		switch {
		case v == "":
			buf.WriteString(`""`)
		case strings.HasSuffix(v, "\n"):
			buf.WriteString("|")
			for line := range strings.SplitSeq(strings.TrimSuffix(v, "\n"), "\n") {
				buf.WriteString("\n" + cindent + yamlIndent + line)
			}
		default:
			buf.WriteString(quoteJsonnet(v))
		}
	case float64:
		buf.WriteString(formatNumber(v))
	case []any:
		if len(v) == 0 {
			buf.WriteString("[]")
			return nil
		}
		for ix, elem := range v {
			if ix != 0 {
				buf.WriteString("\n" + cindent)
			}
			buf.WriteByte('-')
			if a, ok := elem.([]any); ok && len(a) > 0 {
				buf.WriteString("\n" + cindent + yamlIndent)
			} else {
				buf.WriteByte(' ')
			}
			indent := cindent
			switch elem.(type) {
			case []any, map[string]any:
				indent += yamlIndent
			}
			if err := yamlDoc(buf, elem, indent); err != nil {
				return err
			}
		}
	case map[string]any:
		if len(v) == 0 {
			buf.WriteString("{}")
			return nil
		}
		for ix, k := range sortedKeys(v) {
			if ix != 0 {
				buf.WriteString("\n" + cindent)
			}
			if yamlBareSafe(k) {
				buf.WriteString(k)
			} else {
				buf.WriteString(quoteJsonnet(k))
			}
			buf.WriteByte(':')
			indent := cindent
			switch f := v[k].(type) {
			case []any:
				if len(f) > 0 {
					// indent_array_in_object=true
					buf.WriteString("\n" + cindent + yamlIndent)
					indent += yamlIndent
				} else {
					buf.WriteByte(' ')
				}
			case map[string]any:
				if len(f) > 0 {
					buf.WriteString("\n" + cindent + yamlIndent)
					indent += yamlIndent
				} else {
					buf.WriteByte(' ')
				}
			default:
				buf.WriteByte(' ')
			}
			if err := yamlDoc(buf, v[k], indent); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("manifest YAML: unsupported value of type %T", v)
	}
	return nil
}

// ManifestJSONEx is std.manifestJsonEx(v, indent) of go-jsonnet v0.22.0
// (newline "\n", key separator ": "), without a final newline, for a plain
// value (as encoding/json decodes it). An empty
// array or object keeps its two newlines ("[\n\n]"), as jsonnet writes it.
func ManifestJSONEx(v any, indent string) (string, error) {
	var b strings.Builder
	if err := jsonEx(&b, v, indent, ""); err != nil {
		return "", err
	}
	return b.String(), nil
}

func jsonEx(b *strings.Builder, v any, sindent, cindent string) error {
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case string:
		s, err := jsonEncodeString(v)
		if err != nil {
			return err
		}
		b.WriteString(s)
	case float64:
		b.WriteString(formatNumber(v))
	case []any:
		inner := cindent + sindent
		b.WriteString("[\n")
		for ix, elem := range v {
			if ix != 0 {
				b.WriteString(",\n")
			}
			b.WriteString(inner)
			if err := jsonEx(b, elem, sindent, inner); err != nil {
				return err
			}
		}
		b.WriteString("\n" + cindent + "]")
	case map[string]any:
		inner := cindent + sindent
		b.WriteString("{\n")
		for ix, k := range sortedKeys(v) {
			if ix != 0 {
				b.WriteString(",\n")
			}
			key, err := jsonEncodeString(k)
			if err != nil {
				return err
			}
			b.WriteString(inner + key + ": ")
			if err := jsonEx(b, v[k], sindent, inner); err != nil {
				return err
			}
		}
		b.WriteString("\n" + cindent + "}")
	default:
		return fmt.Errorf("manifest JSON: unsupported value of type %T", v)
	}
	return nil
}

// jsonEncodeString is go-jsonnet's jsonEncode of a string: encoding/json
// without HTML escaping.
func jsonEncodeString(s string) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return "", err
	}
	return strings.TrimRight(buf.String(), "\n"), nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// plainJSON turns v into the plain value encoding/json decodes it to,
// through its JSON encoding.
func plainJSON(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// manifestRuleFile renders a rule file: header, then the file's groups in
// ManifestYAMLDoc's format. The YAML is read back and must be the same
// value: manifestYamlDoc writes a string ending in a newline as a literal
// block without a chomping or indentation indicator, which some strings
// (more than one final newline, a leading space) would not survive.
func manifestRuleFile(header string, groups []RuleGroup) ([]byte, error) {
	// The rule structs carry yaml tags (field names, omitempty): their
	// YAML, read back, is the value.
	y, err := yaml.Marshal(RuleFile{Groups: groups})
	if err != nil {
		return nil, err
	}
	var generic any
	if err := yaml.Unmarshal(y, &generic); err != nil {
		return nil, err
	}
	v, err := plainJSON(generic)
	if err != nil {
		return nil, err
	}
	blockExprs(v)
	doc, err := ManifestYAMLDoc(v)
	if err != nil {
		return nil, err
	}
	var back any
	if err := yaml.Unmarshal([]byte(doc), &back); err != nil {
		return nil, fmt.Errorf("read back the manifested rules: %w", err)
	}
	if back, err = plainJSON(back); err != nil {
		return nil, err
	}
	if !reflect.DeepEqual(back, v) {
		return nil, fmt.Errorf("the manifested rules do not read back as written")
	}
	return []byte(header + doc + "\n"), nil
}

// blockExprs ends every expression of more than one line in v (a rule
// file's plain value) with a newline, in place: manifestYamlDoc writes
// such a string as a literal block ("|"), readable line by line, and any
// other string on one quoted line with "\n" escapes. PromQL ignores the
// final newline. mixin.libsonnet takes it off before it patches an
// expression and puts it back after.
func blockExprs(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "expr" && strings.Contains(s, "\n") && !strings.HasSuffix(s, "\n") {
				v[k] = s + "\n"
				continue
			}
			blockExprs(x)
		}
	case []any:
		for _, x := range v {
			blockExprs(x)
		}
	}
}

// manifestDashboard renders a dashboard in ManifestJSONEx's format with a
// two-space indent.
func manifestDashboard(d any) ([]byte, error) {
	v, err := plainJSON(d)
	if err != nil {
		return nil, err
	}
	s, err := ManifestJSONEx(v, "  ")
	if err != nil {
		return nil, err
	}
	return []byte(s + "\n"), nil
}
