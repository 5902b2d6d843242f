package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/go-kit/log/level"
	"github.com/go-logfmt/logfmt"
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

// exporter-toolkit logs through the bridge: its lines carry the same one
// timestamp key as poolwatch's own, ts, and never slog's time, in both
// formats.
func TestSlog_LinesHaveTheSameOneTimestampKeyAsTheAgents(t *testing.T) {
	for _, format := range strings.Split(Formats, ", ") {
		var buf bytes.Buffer
		l, err := New(&buf, "info", format)
		require.NoError(t, err)
		level.Info(l.Log).Log("msg", "own line")
		l.Slog().With("component", "web").Info("Listening on", "address", "[::]:9648")
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		require.Len(t, lines, 2, buf.String())
		for _, line := range lines {
			keys := logKeys(t, format, line)
			require.Contains(t, keys, "ts", "%s line %q", format, line)
			require.NotContains(t, keys, "time", "%s line %q", format, line)
			require.Contains(t, keys, "caller", "%s line %q", format, line)
		}
		require.Contains(t, lines[1], "Listening on")
	}
}

// logKeys returns the keys of one log line.
func logKeys(t *testing.T, format, line string) []string {
	t.Helper()
	var keys []string
	if format == "json" {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		for k := range m {
			keys = append(keys, k)
		}
		return keys
	}
	d := logfmt.NewDecoder(strings.NewReader(line))
	for d.ScanRecord() {
		for d.ScanKeyval() {
			keys = append(keys, string(d.Key()))
		}
	}
	require.NoError(t, d.Err())
	return keys
}
