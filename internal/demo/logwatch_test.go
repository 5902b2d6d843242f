package main

import (
	"testing"

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
