package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// trackedFiles lists the repository's files as git does, or skips the test
// outside a git checkout (a source tarball).
func trackedFiles(t *testing.T, patterns ...string) []string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"ls-files", "--"}, patterns...)...).Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	return strings.Fields(string(out))
}

func TestLicense_IsApache2(t *testing.T) {
	b, err := os.ReadFile("LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{
		"Apache License",
		"Version 2.0, January 2004",
		"http://www.apache.org/licenses/",
		"TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
		"END OF TERMS AND CONDITIONS",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("LICENSE does not contain %q", want)
		}
	}
}

// licenceHeaderRE matches the start of a per-file licence header.
var licenceHeaderRE = regexp.MustCompile(`(?i)^(//|#)\s*(Copyright|Licensed under|SPDX-License-Identifier)`)

// The convention: LICENSE covers the repository, and no source file carries
// a header of its own (README.md says so).
func TestLicense_NoSourceFileCarriesAHeaderOfItsOwn(t *testing.T) {
	for _, f := range trackedFiles(t, "*.go", "*.sh", "*.libsonnet", "*.jsonnet", "*.tpl", "*.yaml", "*.yml", "Makefile", "Dockerfile") {
		fh, err := os.Open(f) //nolint:gosec // a tracked file
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for i := 0; i < 5 && sc.Scan(); i++ {
			if licenceHeaderRE.MatchString(sc.Text()) {
				t.Errorf("%s:%d: %q: the repository's LICENSE covers every file; drop the per-file header", f, i+1, sc.Text())
			}
		}
		_ = fh.Close()
	}
}

// The README has you create poolwatch.yml in the repository root; it may
// hold a password, so git must ignore it.
func TestGitignore_CoversTheConfigFileTheREADMECreates(t *testing.T) {
	trackedFiles(t, "README.md")
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "cp config.yaml.example poolwatch.yml") {
		t.Fatal("README.md no longer creates poolwatch.yml: update this test")
	}
	if out, err := exec.Command("git", "check-ignore", "-q", "poolwatch.yml").CombinedOutput(); err != nil {
		t.Errorf("git check-ignore poolwatch.yml: %v %s: add /poolwatch.yml to .gitignore", err, out)
	}
}

// markdownLinkRE matches the target of a Markdown link or a path quoted in
// backticks that starts with "../".
var markdownLinkRE = regexp.MustCompile("\\]\\(([^)#\\s]+)|`(\\.\\./[^`\\s]+)`")

// No document points at a file outside the repository: a relative link or
// path must resolve inside it.
func TestDocs_PointOnlyAtFilesInsideTheRepository(t *testing.T) {
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range trackedFiles(t, "*.md") {
		b, err := os.ReadFile(f) //nolint:gosec // a tracked file
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range markdownLinkRE.FindAllStringSubmatch(string(b), -1) {
			target := m[1] + m[2]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") || strings.HasPrefix(target, "/") {
				continue
			}
			abs := filepath.Join(root, filepath.Dir(f), target)
			if rel, err := filepath.Rel(root, abs); err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s: %q points outside the repository", f, target)
				continue
			}
			if _, err := os.Stat(abs); err != nil { //nolint:gosec // G703: a link in the repository's own docs, checked to exist
				t.Errorf("%s: %q does not exist", f, target)
			}
		}
	}
}
