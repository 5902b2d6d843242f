package launch

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLookPath_FindsAProgramOnPathAndSaysWhenOneIsMissing(t *testing.T) {
	got, err := LookPath("sh")
	require.NoError(t, err)
	require.True(t, filepath.IsAbs(got), got)

	_, err = LookPath("no-such-binary-poolwatch")
	require.ErrorIs(t, err, ErrNotInstalled)
	require.ErrorContains(t, err, "no-such-binary-poolwatch")

	t.Setenv("POOLWATCH_PG_BINDIR", t.TempDir())
	_, err = LookPath("postgres")
	require.ErrorIs(t, err, ErrNotInstalled, "PostgreSQL programs are looked up in their directory only")
}

func TestDependency_CheckNamesWhatIsMissingAndTheAptPackages(t *testing.T) {
	d := Dependency{Name: "x", Binaries: []string{"sh", "no-such-binary-poolwatch"}, Files: []string{"/no/such/file.jar"}, Apt: []string{"pkg-a", "pkg-b"}}
	err := d.Check()
	require.ErrorIs(t, err, ErrNotInstalled)
	require.ErrorContains(t, err, "x is not installed (no-such-binary-poolwatch not installed")
	require.ErrorContains(t, err, "file /no/such/file.jar")
	require.ErrorContains(t, err, "apt package pkg-a pkg-b")
	require.NotContains(t, err.Error(), "sh not installed")

	require.NoError(t, Dependency{Name: "y", Binaries: []string{"sh"}, Probe: []string{"sh", "-c", "exit 0"}}.Check())
	err = Dependency{Name: "z", Binaries: []string{"sh"}, Probe: []string{"sh", "-c", "echo no module; exit 1"}, Apt: []string{"p"}}.Check()
	require.ErrorContains(t, err, "no module")
}

func TestFindDependency_FindsByNameAndByTheBinariesItProvides(t *testing.T) {
	for name, want := range map[string]string{"postgres": "postgres", "initdb": "postgres", "promtool": "prometheus", "amtool": "alertmanager", "chromium": "chromium"} {
		d, ok := FindDependency(name)
		require.True(t, ok, name)
		require.Equal(t, want, d.Name, name)
		require.NotEmpty(t, d.Apt, name)
	}
	_, ok := FindDependency("nope")
	require.False(t, ok)
	seen := map[string]bool{}
	for _, d := range Dependencies() {
		require.False(t, seen[d.Name], "duplicate %s", d.Name)
		seen[d.Name] = true
		require.Equal(t, strings.ToLower(d.Name), d.Name)
		require.NotContains(t, d.Name, ",")
	}
}
