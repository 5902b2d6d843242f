package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLeakCulprit_KeepsTheCulpritAndDropsTheLogBoilerplate(t *testing.T) {
	line := `ts=2026-11-26T05:41:03.112Z caller=collector.go:311 level=warn target=pg msg="leaked connection" pool=shop-web application_name=shop-web-7 user=app database=shop client_addr=127.0.0.1:35324 pid=29557 held_for=16s last_query="SELECT 42 AS order_id"`
	got, ok := leakCulprit(line)
	require.True(t, ok)
	require.Equal(t, `target=pg pool=shop-web application_name=shop-web-7 user=app database=shop client_addr=127.0.0.1:35324 pid=29557 held_for=16s last_query="SELECT 42 AS order_id"`, got)
}

func TestLeakCulprit_IgnoresOtherLines(t *testing.T) {
	for _, line := range []string{
		`ts=2026-11-26T05:41:03.112Z caller=main.go:80 level=info msg="listening" address=127.0.0.1:9648`,
		`not logfmt at all "`,
		``,
	} {
		_, ok := leakCulprit(line)
		require.False(t, ok, line)
	}
}

func TestFollowLines_HoldsAPartialLineAndStopsWhenTheCallbackSaysSo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	require.NoError(t, os.WriteFile(path, []byte("one\ntw"), 0o600))
	var got []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		followLines(t.Context(), path, 10*time.Millisecond, func(line string) bool {
			got = append(got, line)
			return line != "three"
		})
	}()
	time.Sleep(50 * time.Millisecond)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("o\nthree\nfour\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("followLines did not return after the callback said stop")
	}
	require.Equal(t, []string{"one", "two", "three"}, got)
}
