package mixin

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// githubAnchors returns the anchors GitHub generates for the headings of a
// Markdown document: lower case, punctuation other than "-" and "_" removed,
// spaces turned into "-", and "-1", "-2"... appended to repeats.
func githubAnchors(t *testing.T, markdown string) map[string]string {
	t.Helper()
	anchors := make(map[string]string) // anchor -> heading
	seen := make(map[string]int)
	inFence := false
	sc := bufio.NewScanner(strings.NewReader(markdown))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(heading) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			seen[a]++
			a += "-" + strconv.Itoa(n)
		} else {
			seen[a] = 1
		}
		anchors[a] = heading
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return anchors
}

func readRunbooks(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "runbooks.md"))
	if err != nil {
		t.Fatalf("docs/runbooks.md: %v", err)
	}
	return string(b)
}

func TestRunbooks_EveryRunbookURLPointsAtAnExistingAnchor(t *testing.T) {
	c := Default()
	anchors := githubAnchors(t, readRunbooks(t))
	for _, r := range alertRules(c) {
		url := r.Annotations.RunbookURL
		base, anchor, ok := strings.Cut(url, "#")
		if !ok || base != c.RunbookURL || !strings.HasSuffix(base, "docs/runbooks.md") {
			t.Errorf("%s: runbook_url %q does not point into docs/runbooks.md", r.Alert, url)
			continue
		}
		if _, ok := anchors[anchor]; !ok {
			t.Errorf("%s: docs/runbooks.md has no heading with anchor #%s", r.Alert, anchor)
		}
	}
}

// Each alert's section says how to confirm it with a command to run.
func TestRunbooks_EverySectionHasMeaningConfirmationCausesAndActions(t *testing.T) {
	text := readRunbooks(t)
	sections := strings.Split(text, "\n## ")
	byName := make(map[string]string)
	for _, s := range sections[1:] {
		name, body, _ := strings.Cut(s, "\n")
		byName[strings.TrimSpace(name)] = body
	}
	for _, r := range alertRules(Default()) {
		body, ok := byName[r.Alert]
		if !ok {
			t.Errorf("docs/runbooks.md has no section ## %s", r.Alert)
			continue
		}
		for _, part := range []string{"**What it means.**", "**How to confirm.**", "**Usual causes.**", "**What to do.**", "```"} {
			if !strings.Contains(body, part) {
				t.Errorf("runbook %s lacks %q", r.Alert, part)
			}
		}
		if !strings.Contains(body, "SHOW ") && !strings.Contains(body, "pg_stat_activity") && !strings.Contains(body, "curl") {
			t.Errorf("runbook %s names no SHOW command, pg_stat_activity query or request to run", r.Alert)
		}
		if !strings.Contains(body, "**Severity:** "+r.Labels["severity"]) {
			t.Errorf("runbook %s does not state severity %s", r.Alert, r.Labels["severity"])
		}
	}
}

func TestGithubAnchors_FollowGitHubRules(t *testing.T) {
	got := githubAnchors(t, "# A Title\n## PoolExhausted\n```\n# not a heading\n```\n## Foo: bar_baz?\n## Foo: bar_baz?\n")
	for _, want := range []string{"a-title", "poolexhausted", "foo-bar_baz", "foo-bar_baz-1"} {
		if _, ok := got[want]; !ok {
			t.Errorf("anchor %q missing from %v", want, got)
		}
	}
	if _, ok := got["not-a-heading"]; ok {
		t.Error("a line in a code fence became a heading")
	}
}

func TestExamples_PrometheusConfigIsValidAndLoadsTheRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	out, err := runTool(t, repoRoot, promtool, "check", "config", "prometheus.yml.example")
	if err != nil || !strings.Contains(out, "SUCCESS: 2 rule files found") || !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", ruleCount())) ||
		!strings.Contains(out, "SUCCESS: 3 rules found") {
		t.Errorf("promtool check config prometheus.yml.example: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, "prometheus.yml.example"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"metrics_path: /probe", "target_label: __param_target", "job_name: poolwatch\n", RulesFile, TimeWeightedRulesFile} {
		if !strings.Contains(string(b), want) {
			t.Errorf("prometheus.yml.example lacks %q", want)
		}
	}
}

func TestExamples_AlertmanagerPagesOnCriticalAndTicketsOnWarning(t *testing.T) {
	amtool := requireTool(t, "amtool")
	out, err := runTool(t, repoRoot, amtool, "check-config", "alertmanager.yml.example")
	if err != nil || !strings.Contains(out, "SUCCESS") {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
	for severity, receiver := range map[string]string{SeverityCritical: "pager", SeverityWarning: "ticket"} {
		for _, r := range alertRules(Default()) {
			if r.Labels["severity"] != severity {
				continue
			}
			out, err := runTool(t, repoRoot, amtool, "config", "routes", "test",
				"--config.file=alertmanager.yml.example", "--verify.receivers="+receiver,
				"severity="+severity, "alertname="+r.Alert, "target=db", "pool=app")
			if err != nil {
				t.Errorf("%s (%s) is not routed to %s: %v\n%s", r.Alert, severity, receiver, err, out)
			}
		}
	}
}

// The routing tree and inhibition rules name alerts and labels: every name
// must be an alert of the rules, and the configuration the end-to-end test
// and the demo run (ShortAlertmanager) must be valid too.
func TestExamples_AlertmanagerNamesExistingAlertsAndTestConfigIsValid(t *testing.T) {
	amtool := requireTool(t, "amtool")
	b := readTestFile(t, filepath.Join(repoRoot, AlertmanagerFile))
	alerts := map[string]bool{}
	for _, r := range alertRules(Default()) {
		alerts[r.Alert] = true
	}
	names := regexp.MustCompile(`\b(Pool[A-Za-z]+)\b`).FindAllString(string(b), -1)
	if len(names) < 5 {
		t.Fatalf("%s names only %v", AlertmanagerFile, names)
	}
	for _, n := range names {
		if !alerts[n] {
			t.Errorf("%s names %s, which is not an alert", AlertmanagerFile, n)
		}
	}
	short, err := RenderAlertmanager(ShortAlertmanager("http://127.0.0.1:1/alerts"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "am.yml"), short, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runTool(t, dir, amtool, "check-config", "am.yml")
	if err != nil || !strings.Contains(out, "SUCCESS") {
		t.Fatalf("amtool check-config (short): %v\n%s", err, out)
	}
	// The leak alerts route by their server, whatever their severity.
	for _, alert := range IncidentAlerts {
		for _, r := range alertRules(Default()) {
			if r.Alert != alert {
				continue
			}
			want := map[string]string{SeverityCritical: ReceiverPager, SeverityWarning: ReceiverTicket}[r.Labels["severity"]]
			out, err := runTool(t, repoRoot, amtool, "config", "routes", "test", "--config.file="+AlertmanagerFile,
				"--verify.receivers="+want, "alertname="+alert, "severity="+r.Labels["severity"], "upstream=db", "target=bouncer", "pool=app")
			if err != nil {
				t.Errorf("%s is not routed to %s: %v\n%s", alert, want, err, out)
			}
		}
	}
}
