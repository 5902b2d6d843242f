// Command readme-flags writes the table of poolwatch's flags and environment
// variables into README.md, between the lines
//
//	<!-- flags:begin -->
//	<!-- flags:end -->
//
// from the help that the poolwatch binary itself prints, so the README cannot
// drift from the command line: `poolwatch --help` gives the flags of every
// command and the list of commands, and `poolwatch CMD --help` each
// command's own flags. Run it with `make readme-flags`; its test fails when
// README.md differs from the binary's help.
//
// Usage:
//
//	readme-flags -binary ./poolwatch -readme README.md [-check]
//
// With -check it changes nothing and exits with status 1 if README.md is
// out of date.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// Markers delimit the generated table in README.md. Everything between them
// is replaced; everything outside them is kept byte for byte.
const (
	BeginMarker = "<!-- flags:begin -->"
	EndMarker   = "<!-- flags:end -->"
)

// helpColumns is the terminal width given to kong through COLUMNS, wide
// enough that no flag or description is wrapped.
const helpColumns = "1000"

// Flag is one flag as poolwatch's help shows it.
type Flag struct {
	// Name is the long name without dashes, e.g. "config.file".
	Name string
	// Negatable is true for a boolean shown as --[no-]NAME.
	Negatable bool
	// Short is the one-letter alias, or "".
	Short string
	// Default is the default value as help shows it ("" when none is shown);
	// Placeholder the value's placeholder when there is no default (STRING).
	Default, Placeholder string
	// Repeatable is true for a list flag (help shows "DEFAULT,...").
	Repeatable bool
	// Envs are the environment variables that set the flag, without "$".
	Envs []string
	// Help is the description with the environment variables removed.
	Help string
	// Commands are the commands that take the flag; nil means every command
	// (the application-level flags).
	Commands []string
}

// Spelling returns the flag as written on the command line, e.g.
// "--web.listen-address" or "--[no-]metrics.targets".
func (f Flag) Spelling() string {
	if f.Negatable {
		return "--[no-]" + f.Name
	}
	return "--" + f.Name
}

var (
	// flagLine matches a flag row of kong's help: the flag, with its value
	// or placeholder, then at least two spaces, then the description.
	flagLine = regexp.MustCompile(`^ {2}(?:-([A-Za-z0-9]), | {4})--(\[no-\])?([A-Za-z0-9][A-Za-z0-9._-]*)(?:=(\S+))?(?: {2,}(.*))?$`)
	// envSuffix matches kong's "($ENV)" or "($A, $B)" at the end of a
	// description, before the final period if there is one.
	envSuffix = regexp.MustCompile(`\s*\((\$[A-Za-z_][A-Za-z0-9_]*(?:, \$[A-Za-z_][A-Za-z0-9_]*)*)\)(\.?)$`)
	// commandLine matches a command of the "Commands:" section.
	commandLine = regexp.MustCompile(`^ {2}([a-z][a-z0-9-]*)(?: \[flags\]| <|$)`)
	// placeholder is kong's placeholder for a flag with no default: the
	// upper-cased type or an explicit placeholder.
	placeholder = regexp.MustCompile(`^[A-Z][A-Z0-9_-]*$`)
)

// ParseFlags returns the flags of the "Flags:" section of one help text, in
// the order shown. It fails on a row it cannot read, so a change in kong's
// layout breaks the generator rather than the table.
func ParseFlags(help string) ([]Flag, error) {
	var flags []Flag
	in := false
	for i, line := range strings.Split(help, "\n") {
		switch {
		case line == "Flags:":
			in = true
			continue
		case !in:
			continue
		case line == "":
			continue // kong separates groups (app flags, command flags) with a blank line
		case !strings.HasPrefix(line, " "):
			in = false // the next section
			continue
		}
		m := flagLine.FindStringSubmatch(line)
		if m == nil {
			// A wrapped or multi-line description continues the previous row.
			if len(flags) > 0 && strings.HasPrefix(line, "      ") && !strings.HasPrefix(strings.TrimSpace(line), "-") {
				f := &flags[len(flags)-1]
				f.Help = strings.TrimSpace(f.Help + " " + strings.TrimSpace(line))
				continue
			}
			return nil, fmt.Errorf("help line %d: cannot parse flag row %q", i+1, line)
		}
		f := Flag{Short: m[1], Negatable: m[2] != "", Name: m[3], Help: m[5]}
		if v := m[4]; v != "" {
			if f.Negatable {
				return nil, fmt.Errorf("help line %d: negatable flag --%s shows a value %q", i+1, f.Name, v)
			}
			if strings.HasSuffix(v, ",...") {
				f.Repeatable = true
				v = strings.TrimSuffix(v, ",...")
			}
			switch {
			case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
				f.Default = v[1 : len(v)-1]
			case placeholder.MatchString(v):
				f.Placeholder = v
			default:
				f.Default = v
			}
		}
		flags = append(flags, f)
	}
	// Environment variables are read once the description is complete.
	for i := range flags {
		f := &flags[i]
		if m := envSuffix.FindStringSubmatch(f.Help); m != nil {
			for _, e := range strings.Split(m[1], ", ") {
				f.Envs = append(f.Envs, strings.TrimPrefix(e, "$"))
			}
			f.Help = f.Help[:len(f.Help)-len(m[0])] + m[2]
		}
	}
	if len(flags) == 0 {
		return nil, errors.New("no flags found: the help has no Flags: section")
	}
	return flags, nil
}

// ParseCommands returns the command names of the "Commands:" section of the
// application's help, in the order shown.
func ParseCommands(help string) []string {
	var cmds []string
	in := false
	for _, line := range strings.Split(help, "\n") {
		switch {
		case line == "Commands:":
			in = true
		case in && line != "" && !strings.HasPrefix(line, " "):
			in = false
		case in:
			if m := commandLine.FindStringSubmatch(line); m != nil {
				cmds = append(cmds, m[1])
			}
		}
	}
	return cmds
}

// Collect runs `bin --help` and `bin CMD --help` for every command and
// returns the application flags (Commands nil) followed by each command's
// own flags, skipping --help itself.
func Collect(bin string) ([]Flag, error) {
	top, err := help(bin)
	if err != nil {
		return nil, err
	}
	global, err := ParseFlags(top)
	if err != nil {
		return nil, fmt.Errorf("%s --help: %w", bin, err)
	}
	seen := map[string]bool{}
	var out []Flag
	for _, f := range global {
		seen[f.Name] = true
		if f.Name != "help" {
			out = append(out, f)
		}
	}
	cmds := ParseCommands(top)
	if len(cmds) == 0 {
		return nil, fmt.Errorf("%s --help lists no commands", bin)
	}
	byName := map[string]int{}
	for _, c := range cmds {
		text, err := help(bin, c)
		if err != nil {
			return nil, err
		}
		fs, err := ParseFlags(text)
		if err != nil {
			return nil, fmt.Errorf("%s %s --help: %w", bin, c, err)
		}
		for _, f := range fs {
			if seen[f.Name] {
				continue
			}
			if i, ok := byName[f.Name]; ok {
				out[i].Commands = append(out[i].Commands, c)
				continue
			}
			f.Commands = []string{c}
			byName[f.Name] = len(out)
			out = append(out, f)
		}
	}
	return out, nil
}

// help runs bin with args and --help and returns its standard output. The
// environment is the caller's without POOLWATCH_* variables, plus a wide
// COLUMNS so kong wraps nothing.
func help(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, append(args, "--help")...) //nolint:gosec // the binary is the generator's input
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "POOLWATCH_") && !strings.HasPrefix(e, "COLUMNS=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "COLUMNS="+helpColumns)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("run %s %s --help: %w: %s", bin, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// RenderTable returns the markdown between the markers: a note that the
// table is generated, and one row per flag.
func RenderTable(flags []Flag) string {
	var b strings.Builder
	b.WriteString("<!-- Generated from `poolwatch --help` by `make readme-flags`: do not edit by hand. -->\n")
	b.WriteString("`run` is the default command, so its flags can be given without it. ")
	b.WriteString("A flag given on the command line overrides its environment variable. ")
	b.WriteString("`--help` shows no default for boolean flags.\n\n")
	b.WriteString("| Flag | Environment variable | Default | Commands | Description |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, f := range flags {
		spelling := f.Spelling()
		if f.Placeholder != "" {
			spelling += "=" + f.Placeholder
		}
		name := code(spelling)
		if f.Short != "" {
			name = code("-"+f.Short) + ", " + name
		}
		if f.Repeatable {
			name += " (repeatable)"
		}
		envs := make([]string, 0, len(f.Envs))
		for _, e := range f.Envs {
			envs = append(envs, code(e))
		}
		def := ""
		if f.Default != "" {
			def = code(f.Default)
		}
		cmds := "all"
		if f.Commands != nil {
			cs := make([]string, 0, len(f.Commands))
			for _, c := range f.Commands {
				cs = append(cs, code(c))
			}
			cmds = strings.Join(cs, ", ")
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", name, strings.Join(envs, ", "), def, cmds, cell(f.Help))
	}
	return b.String()
}

// code formats s as inline code, safe inside a table cell.
func code(s string) string { return "`" + strings.ReplaceAll(s, "|", `\|`) + "`" }

// cell escapes a description for a table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Splice returns readme with the text between the markers replaced by
// table. Each marker must appear exactly once, on its own line, begin
// before end.
func Splice(readme, table string) (string, error) {
	lines := strings.SplitAfter(readme, "\n")
	begin, end := -1, -1
	for i, l := range lines {
		switch strings.TrimRight(l, "\r\n") {
		case BeginMarker:
			if begin >= 0 {
				return "", fmt.Errorf("%s appears more than once", BeginMarker)
			}
			begin = i
		case EndMarker:
			if end >= 0 {
				return "", fmt.Errorf("%s appears more than once", EndMarker)
			}
			end = i
		}
	}
	if begin < 0 || end < 0 {
		return "", fmt.Errorf("markers %s and %s must each be on a line of their own", BeginMarker, EndMarker)
	}
	if end < begin {
		return "", fmt.Errorf("%s comes before %s", EndMarker, BeginMarker)
	}
	var b strings.Builder
	for _, l := range lines[:begin+1] {
		b.WriteString(l)
	}
	if !strings.HasSuffix(lines[begin], "\n") {
		b.WriteString("\n")
	}
	b.WriteString(table)
	for _, l := range lines[end:] {
		b.WriteString(l)
	}
	return b.String(), nil
}

// Generate returns the README text with the table regenerated from bin.
func Generate(bin, readme string) (string, error) {
	flags, err := Collect(bin)
	if err != nil {
		return "", err
	}
	return Splice(readme, RenderTable(flags))
}

func main() {
	bin := flag.String("binary", "./poolwatch", "poolwatch binary whose help is read")
	path := flag.String("readme", "README.md", "README file holding the markers")
	check := flag.Bool("check", false, "do not write; exit 1 if the README is out of date")
	flag.Parse()
	if err := run(*bin, *path, *check); err != nil {
		fmt.Fprintln(os.Stderr, "readme-flags:", err)
		os.Exit(1)
	}
}

func run(bin, path string, check bool) error {
	old, err := os.ReadFile(path) //nolint:gosec // the README named on the command line
	if err != nil {
		return fmt.Errorf("read README: %w", err)
	}
	updated, err := Generate(bin, string(old))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if updated == string(old) {
		return nil
	}
	if check {
		return fmt.Errorf("%s: the flags table differs from %s's help: run `make readme-flags`", path, bin)
	}
	if err := os.WriteFile(path, []byte(updated), 0o644); err != nil { //nolint:gosec // a README is world-readable
		return fmt.Errorf("write README: %w", err)
	}
	fmt.Printf("%s: flags table updated\n", path)
	return nil
}
