package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseFlags_DefaultsRunTheBinaryMakeBuildWrites(t *testing.T) {
	o, err := parseFlags(nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "./poolwatch", o.poolwatch)
	require.Equal(t, 15*time.Second, o.leakThreshold)
	require.Empty(t, o.screenshot, "no Chromium unless asked")
}

func TestParseFlags_RejectsALeakThresholdTheScriptCannotWaitFor(t *testing.T) {
	for _, v := range []string{"500ms", "2m"} {
		_, err := parseFlags([]string{"-leak-threshold", v}, &bytes.Buffer{})
		require.ErrorContains(t, err, "-leak-threshold", v)
	}
}

func TestRun_ExitsWithUsageStatusOnABadFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, exitUsage, run([]string{"-no-such-flag"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "no-such-flag")
	require.Equal(t, exitUsage, run([]string{"extra"}, &stdout, &stderr))
}

func TestJitter_StaysWithinHalfToOneAndAHalfOfThePause(t *testing.T) {
	for i := 0; i < 1000; i++ {
		j := jitter(time.Second)
		require.GreaterOrEqual(t, j, 500*time.Millisecond)
		require.Less(t, j, 1500*time.Millisecond)
	}
	require.Zero(t, jitter(0))
}
