package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// A help text in kong's layout, as `poolwatch run --help` prints it with
// COLUMNS=1000, with one description wrapped as a narrow terminal would.
const runHelp = `Usage: poolwatch run [flags]

Run the exporter (the default command).

Flags:
  -h, --help                             Show context-sensitive help.
      --config.file="poolwatch.yml"      Path to the configuration file ($POOLWATCH_CONFIG_FILE).
      --version                          Print version information and exit.

      --web.listen-address=:9648,...     Addresses to listen on; repeat for
                                         several ($POOLWATCH_WEB_LISTEN_ADDRESS).
      --web.config.file=STRING           Path to a web config | file ($POOLWATCH_WEB_CONFIG_FILE, $PW_WEB).
      --scrape.timeout-offset=500ms      Subtracted from the timeout ($POOLWATCH_SCRAPE_TIMEOUT_OFFSET).
      --[no-]metrics.targets             Put targets on /metrics ($POOLWATCH_METRICS_TARGETS).
      --web.shutdown-timeout=10s         How long a shutdown waits.
`

func TestParseFlags_ReadsDefaultsPlaceholdersEnvsAndWrappedDescriptions(t *testing.T) {
	got, err := ParseFlags(runHelp)
	if err != nil {
		t.Fatal(err)
	}
	want := []Flag{
		{Name: "help", Short: "h", Help: "Show context-sensitive help."},
		{Name: "config.file", Default: "poolwatch.yml", Envs: []string{"POOLWATCH_CONFIG_FILE"}, Help: "Path to the configuration file."},
		{Name: "version", Help: "Print version information and exit."},
		{Name: "web.listen-address", Default: ":9648", Repeatable: true, Envs: []string{"POOLWATCH_WEB_LISTEN_ADDRESS"}, Help: "Addresses to listen on; repeat for several."},
		{Name: "web.config.file", Placeholder: "STRING", Envs: []string{"POOLWATCH_WEB_CONFIG_FILE", "PW_WEB"}, Help: "Path to a web config | file."},
		{Name: "scrape.timeout-offset", Default: "500ms", Envs: []string{"POOLWATCH_SCRAPE_TIMEOUT_OFFSET"}, Help: "Subtracted from the timeout."},
		{Name: "metrics.targets", Negatable: true, Envs: []string{"POOLWATCH_METRICS_TARGETS"}, Help: "Put targets on /metrics."},
		{Name: "web.shutdown-timeout", Default: "10s", Help: "How long a shutdown waits."},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseFlags:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseFlags_FailsOnARowItCannotRead(t *testing.T) {
	for name, help := range map[string]string{
		"no flags section":      "Usage: poolwatch\n\nCommands:\n  run\n",
		"custom negation":       "Flags:\n      --color/no-colour    Colours.\n",
		"value on a negatable":  "Flags:\n      --[no-]x=true    X.\n",
		"row without dashes":    "Flags:\n  config.file    Path.\n",
		"continuation as first": "Flags:\n                 orphan description\n",
	} {
		t.Run(name, func(t *testing.T) {
			if fs, err := ParseFlags(help); err == nil {
				t.Fatalf("ParseFlags accepted %q: %+v", help, fs)
			}
		})
	}
}

func TestParseCommands_ListsTheCommandsSection(t *testing.T) {
	help := "Usage: poolwatch <command> [flags]\n\nFlags:\n  -h, --help    Help.\n\nCommands:\n  run [flags]\n    Run the exporter.\n\n  check-config [flags]\n    Validate.\n\nRun \"poolwatch <command> --help\" for more information on a command.\n"
	if got, want := ParseCommands(help), []string{"run", "check-config"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseCommands = %v, want %v", got, want)
	}
}

func TestRenderTable_EscapesPipesAndMarksCommandsAndPlaceholders(t *testing.T) {
	got := RenderTable([]Flag{
		{Name: "config.file", Default: "poolwatch.yml", Envs: []string{"POOLWATCH_CONFIG_FILE"}, Help: "Path."},
		{Name: "web.config.file", Placeholder: "STRING", Help: "a | b", Commands: []string{"run", "check-config"}},
		{Name: "web.listen-address", Default: ":9648", Repeatable: true, Commands: []string{"run"}, Help: "Listen."},
		{Name: "metrics.targets", Negatable: true, Commands: []string{"run"}, Help: "M."},
	})
	for _, row := range []string{
		"| `--config.file` | `POOLWATCH_CONFIG_FILE` | `poolwatch.yml` | all | Path. |\n",
		"| `--web.config.file=STRING` |  |  | `run`, `check-config` | a \\| b |\n",
		"| `--web.listen-address` (repeatable) |  | `:9648` | `run` | Listen. |\n",
		"| `--[no-]metrics.targets` |  |  | `run` | M. |\n",
	} {
		if !strings.Contains(got, row) {
			t.Errorf("table lacks row %q:\n%s", row, got)
		}
	}
}

func TestSplice_ReplacesOnlyBetweenTheMarkers(t *testing.T) {
	readme := "# Title\n\nbefore\n" + BeginMarker + "\nold table\nmore old\n" + EndMarker + "\nafter\n"
	got, err := Splice(readme, "new table\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Title\n\nbefore\n" + BeginMarker + "\nnew table\n" + EndMarker + "\nafter\n"
	if got != want {
		t.Fatalf("Splice:\n got %q\nwant %q", got, want)
	}
	again, err := Splice(got, "new table\n")
	if err != nil || again != got {
		t.Fatalf("Splice is not idempotent: %q, %v", again, err)
	}
}

func TestSplice_RejectsMissingDuplicatedOrReversedMarkers(t *testing.T) {
	for name, readme := range map[string]string{
		"none":           "# README\n",
		"no end":         BeginMarker + "\n",
		"reversed":       EndMarker + "\n" + BeginMarker + "\n",
		"twice":          BeginMarker + "\n" + EndMarker + "\n" + BeginMarker + "\n" + EndMarker + "\n",
		"not on its own": "see " + BeginMarker + "\n" + EndMarker + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Splice(readme, "x\n"); err == nil {
				t.Fatalf("Splice accepted %q", readme)
			}
		})
	}
}

// TestREADME_FlagsTableMatchesTheBinarysHelp is the drift guard: the table
// in README.md must be what `make readme-flags` writes from the binary.
func TestREADME_FlagsTableMatchesTheBinarysHelp(t *testing.T) {
	bin := testenv.BuildPoolwatch(t)
	flags, err := Collect(bin)
	if err != nil {
		t.Fatal(err)
	}
	// The generator must see both the application flags and run's own
	// flags, or an empty table would match an empty README.
	byName := map[string]Flag{}
	for _, f := range flags {
		byName[f.Name] = f
	}
	if f, ok := byName["config.file"]; !ok || f.Commands != nil || !reflect.DeepEqual(f.Envs, []string{"POOLWATCH_CONFIG_FILE"}) {
		t.Errorf("config.file: got %+v (present %v), want an application flag with POOLWATCH_CONFIG_FILE", f, ok)
	}
	if f, ok := byName["web.listen-address"]; !ok || !reflect.DeepEqual(f.Commands, []string{"run"}) || f.Default != ":9648" {
		t.Errorf("web.listen-address: got %+v (present %v), want a run flag defaulting to :9648", f, ok)
	}
	if _, ok := byName["help"]; ok {
		t.Errorf("--help is listed; it is left out of the table")
	}

	path := filepath.Join("..", "..", "README.md")
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read README.md: %v", err)
	}
	want, err := Splice(string(old), RenderTable(flags))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	if want != string(old) {
		t.Fatalf("README.md's flags table differs from poolwatch's --help: run `make readme-flags`.\nwant:\n%s", want)
	}
}
