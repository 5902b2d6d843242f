package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestPasswordSource_ReadTrimsOneTrailingNewline(t *testing.T) {
	for content, want := range map[string]string{
		"S3cret":       "S3cret",
		"S3cret\n":     "S3cret",
		"S3cret\r\n":   "S3cret",
		"S3cret\n\n":   "S3cret\n",
		" S3 cret \n":  " S3 cret ",
		"S3cret\r":     "S3cret\r",
		"line1\nline2": "line1\nline2",
	} {
		got, err := PasswordSource{File: writeFile(t, content)}.Read()
		require.NoError(t, err)
		require.Equal(t, want, got, "content %q", content)
	}
}

func TestPasswordSource_ReadRereadsTheFileOnEveryCall(t *testing.T) {
	p := writeFile(t, "S3cret-old\n")
	src := PasswordSource{File: p}
	got, err := src.Read()
	require.NoError(t, err)
	require.Equal(t, "S3cret-old", got)

	require.NoError(t, os.WriteFile(p, []byte("S3cret-rotated\n"), 0o600))
	got, err = src.Read()
	require.NoError(t, err)
	require.Equal(t, "S3cret-rotated", got)
}

func TestPasswordSource_ReadReadsTheEnvironmentOnEveryCall(t *testing.T) {
	t.Setenv("POOLWATCH_TEST_PW", "S3cret-1")
	src := PasswordSource{Env: "POOLWATCH_TEST_PW"}
	got, err := src.Read()
	require.NoError(t, err)
	require.Equal(t, "S3cret-1", got)
	t.Setenv("POOLWATCH_TEST_PW", "S3cret-2")
	got, err = src.Read()
	require.NoError(t, err)
	require.Equal(t, "S3cret-2", got)
}

func TestPasswordSource_ReadErrorsNameTheSourceNeverTheSecret(t *testing.T) {
	big := writeFile(t, strings.Repeat("S3cret", maxPasswordFileSize))
	empty := writeFile(t, "\n")
	missing := filepath.Join(t.TempDir(), "missing")
	t.Setenv("POOLWATCH_TEST_EMPTY_PW", "")
	cases := map[string]struct {
		src  PasswordSource
		want string
	}{
		"too large":  {PasswordSource{File: big}, `password file "` + big + `" is larger than 65536 bytes`},
		"empty file": {PasswordSource{File: empty}, `password file "` + empty + `" is empty`},
		"missing":    {PasswordSource{File: missing}, "open password file: open " + missing + ": no such file or directory"},
		"directory":  {PasswordSource{File: t.TempDir()}, "is a directory"},
		"empty env":  {PasswordSource{Env: "POOLWATCH_TEST_EMPTY_PW"}, `password environment variable "POOLWATCH_TEST_EMPTY_PW" is not set or empty`},
		"both":       {PasswordSource{File: big, Env: "X"}, "password source has both a file and an environment variable"},
		"unset env":  {PasswordSource{Env: "POOLWATCH_TEST_UNSET_PW_VAR"}, `password environment variable "POOLWATCH_TEST_UNSET_PW_VAR" is not set or empty`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := tc.src.Read()
			require.Error(t, err)
			require.Empty(t, got)
			require.Contains(t, err.Error(), tc.want)
			requireNoSecret(t, err.Error())
		})
	}
}

func TestPasswordSource_ZeroHasNoPassword(t *testing.T) {
	require.True(t, PasswordSource{}.IsZero())
	require.False(t, PasswordSource{Env: "X"}.IsZero())
	got, err := PasswordSource{}.Read()
	require.NoError(t, err)
	require.Empty(t, got)
}
