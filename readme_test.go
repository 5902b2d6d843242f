package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// The flags table in README.md is generated from kong's model of the cli
// struct: every flag's name, short name, environment variables, default,
// commands and help, as kong itself knows them. `make readme-flags` runs
// this test with -update to rewrite the table; without -update the test
// fails when the README has drifted from main.go.
var updateREADME = flag.Bool("update", false, "rewrite the flags table in README.md from the command line's model")

// The table sits in README.md between these lines; everything outside them
// is kept byte for byte.
const (
	flagsBegin = "<!-- flags:begin -->"
	flagsEnd   = "<!-- flags:end -->"
)

func TestREADME_FlagsTableIsTheCommandLinesModel(t *testing.T) {
	const path = "README.md"
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	updated, err := spliceFlags(string(old), flagsTable(t))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if *updateREADME {
		if updated != string(old) {
			if err := os.WriteFile(path, []byte(updated), 0o644); err != nil { //nolint:gosec // a README is world-readable
				t.Fatal(err)
			}
			t.Logf("%s: flags table updated", path)
		}
		return
	}
	if updated != string(old) {
		t.Fatalf("the flags table in %s differs from main.go's cli: run `make readme-flags`. It should read:\n%s", path, flagsTable(t))
	}
}

func TestREADME_FlagsTableShowsEveryKindOfFlag(t *testing.T) {
	table := flagsTable(t)
	for _, row := range []string{
		"| `--config.file` | `POOLWATCH_CONFIG_FILE` | `poolwatch.yml` | all | Path to the configuration file. |",
		"| `--log.level` | `POOLWATCH_LOG_LEVEL` | `info` | all | Only log messages with the given severity or above: one of debug,info,warn,error. |",
		"| `--web.listen-address` (repeatable) | `POOLWATCH_WEB_LISTEN_ADDRESS` | `:9648` | all |",
		"| `--web.config.file=STRING` | `POOLWATCH_WEB_CONFIG_FILE` |  | all |",
		"| `--[no-]metrics.targets` | `POOLWATCH_METRICS_TARGETS` | `true` | all |",
		"| `--web.enable-lifecycle` | `POOLWATCH_WEB_ENABLE_LIFECYCLE` |  | all |",
		"| `--version` |  |  | all |",
	} {
		if !strings.Contains(table, row) {
			t.Errorf("no row starting %q in:\n%s", row, table)
		}
	}
	if strings.Contains(table, "`--help`") {
		t.Errorf("--help has no row:\n%s", table)
	}
}

// flagsTable renders the table from kong's model: the application's flags
// first ("all" commands), then each command's own flags in order, a flag
// that several commands take listed once with all of them.
func flagsTable(t *testing.T) string {
	t.Helper()
	k, err := kong.New(&cli{}, kong.Name("poolwatch"), kong.Vars{"version": "test"})
	if err != nil {
		t.Fatalf("kong model of cli: %v", err)
	}
	type row struct {
		flag     *kong.Flag
		commands []string // nil: the application's own flags
	}
	var rows []*row
	byName := map[string]*row{}
	add := func(f *kong.Flag, cmd string) {
		if f.Hidden || f.Name == "help" {
			return
		}
		if r, ok := byName[f.Name]; ok {
			if r.commands != nil {
				r.commands = append(r.commands, cmd)
			}
			return
		}
		r := &row{flag: f}
		if cmd != "" {
			r.commands = []string{cmd}
		}
		byName[f.Name] = r
		rows = append(rows, r)
	}
	for _, f := range k.Model.Flags {
		add(f, "")
	}
	for _, c := range k.Model.Children {
		if c.Type != kong.CommandNode || c.Hidden {
			continue
		}
		for _, f := range c.Flags {
			add(f, c.Name)
		}
	}

	var b strings.Builder
	b.WriteString("<!-- Generated from main.go's command line (kong's model) by `make readme-flags`: do not edit by hand. -->\n")
	b.WriteString("`run` is the default command: `poolwatch --config.file=poolwatch.yml` runs the exporter, and `poolwatch --help` lists every flag. ")
	b.WriteString("A flag given on the command line overrides its environment variable.\n\n")
	b.WriteString("| Flag | Environment variable | Default | Commands | Description |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, r := range rows {
		f := r.flag
		spelling := "--" + f.Name
		if f.Tag.Negatable != "" {
			spelling = "--[no-]" + f.Name
		}
		if !f.HasDefault && !f.IsBool() && !f.IsCounter() {
			spelling += "=" + f.FormatPlaceHolder()
		}
		name := code(spelling)
		if f.Short != 0 {
			name = code("-"+string(f.Short)) + ", " + name
		}
		if f.IsSlice() {
			name += " (repeatable)"
		}
		envs := make([]string, 0, len(f.Envs))
		for _, e := range f.Envs {
			envs = append(envs, code(e))
		}
		def := ""
		if f.HasDefault {
			def = code(f.Default)
		}
		cmds := "all"
		if r.commands != nil {
			cs := make([]string, 0, len(r.commands))
			for _, c := range r.commands {
				cs = append(cs, code(c))
			}
			cmds = strings.Join(cs, ", ")
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", name, strings.Join(envs, ", "), def, cmds, strings.ReplaceAll(f.Help, "|", `\|`))
	}
	return b.String()
}

// code formats s as inline code, safe inside a table cell.
func code(s string) string { return "`" + strings.ReplaceAll(s, "|", `\|`) + "`" }

// spliceFlags returns readme with the text between the markers replaced by
// table. Each marker must be on a line of its own, once, begin before end.
func spliceFlags(readme, table string) (string, error) {
	before, rest, ok := strings.Cut(readme, flagsBegin+"\n")
	if !ok || strings.Contains(rest, flagsBegin) {
		return "", fmt.Errorf("want exactly one line %s", flagsBegin)
	}
	_, after, ok := strings.Cut("\n"+rest, "\n"+flagsEnd+"\n")
	if !ok || strings.Contains(after, flagsEnd) {
		return "", fmt.Errorf("want exactly one line %s after %s", flagsEnd, flagsBegin)
	}
	return before + flagsBegin + "\n" + table + flagsEnd + "\n" + after, nil
}
