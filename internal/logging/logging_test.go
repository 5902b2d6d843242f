package logging

import (
	"bytes"
	"strings"
	"testing"

	"github.com/go-kit/log/level"
	"github.com/stretchr/testify/require"
)

func TestNew_FiltersByLevelAndFormats(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "warn", "logfmt")
	require.NoError(t, err)
	level.Info(l.Log).Log("msg", "hidden")
	level.Warn(l.Log).Log("msg", "shown", "target_name", "db1")
	out := buf.String()
	require.NotContains(t, out, "hidden")
	require.Contains(t, out, `level=warn`)
	require.Contains(t, out, `msg=shown target_name=db1`)
	require.Contains(t, out, "caller=logging_test.go")

	buf.Reset()
	j, err := New(&buf, "debug", "json")
	require.NoError(t, err)
	level.Debug(j.Log).Log("msg", "dbg")
	require.True(t, strings.HasPrefix(buf.String(), "{"), buf.String())
	require.Contains(t, buf.String(), `"msg":"dbg"`)
}

func TestNew_RejectsUnknownLevelAndFormat(t *testing.T) {
	_, err := New(&bytes.Buffer{}, "loud", "logfmt")
	require.EqualError(t, err, `unknown log level "loud": want one of debug, info, warn, error`)
	_, err = New(&bytes.Buffer{}, "info", "xml")
	require.EqualError(t, err, `unknown log format "xml": want one of logfmt, json`)
}

func TestSlog_BridgesToTheGoKitLogger(t *testing.T) {
	for _, lvl := range strings.Split(Levels, ", ") {
		var buf bytes.Buffer
		l, err := New(&buf, lvl, "logfmt")
		require.NoError(t, err)
		l.Slog().Error("listening failed", "address", ":9648")
		require.Contains(t, buf.String(), "listening failed")
		require.Contains(t, buf.String(), "address=:9648")
	}
}
