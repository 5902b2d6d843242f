package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a settable time source.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestScreen_PlainOutputPrintsThePoolBlockOncePerPeriod(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: time.Unix(1000, 0)}
	s := &screen{w: &out, plainEvery: 10 * time.Second, now: clock.now}
	s.startClock()

	s.pools([]string{"bouncer shop/app 1/3"})
	clock.t = clock.t.Add(time.Second)
	s.pools([]string{"bouncer shop/app 2/3"}) // within the period: not printed
	s.event("PAGE %s", "FIRING")
	clock.t = clock.t.Add(10 * time.Second)
	s.pools([]string{"bouncer shop/app 3/3"})

	require.Equal(t, "[   0s] pools (from poolwatch /metrics):\n"+
		"    bouncer shop/app 1/3\n"+
		"[   1s] PAGE FIRING\n"+
		"[  11s] pools (from poolwatch /metrics):\n"+
		"    bouncer shop/app 3/3\n", out.String())
	require.NotContains(t, out.String(), "\x1b[", "no escape codes outside a terminal")
}

func TestScreen_TerminalRedrawsTheBlockUnderNewEvents(t *testing.T) {
	var out bytes.Buffer
	s := &screen{w: &out, tty: true, plainEvery: time.Hour, now: time.Now, width: func() int { return 0 }}
	s.pools([]string{"a", "b"})
	s.event("hello")
	s.pools([]string{"c", "d"})

	// header + 2 pools drawn; erased (3 lines up) for the event and drawn
	// again; erased again and replaced.
	require.Equal(t, 2, strings.Count(out.String(), "\x1b[3A\x1b[J"))
	require.True(t, strings.HasSuffix(out.String(), "    c\n    d\n"), out.String())
	require.Equal(t, 3, s.drawn)

	s.freeze()
	s.line("after")
	require.True(t, strings.HasSuffix(out.String(), "    d\nafter\n"), "a frozen block stays; later lines go under it")
}

func TestScreen_TerminalCutsBlockLinesToItsWidthSoTheRedrawStaysInPlace(t *testing.T) {
	var out bytes.Buffer
	s := &screen{w: &out, tty: true, plainEvery: time.Hour, now: time.Now, width: func() int { return 12 }}
	s.pools([]string{strings.Repeat("x", 40)})
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		require.Less(t, len(l), 12, "a line as wide as the terminal wraps")
	}
	require.Equal(t, 2, s.drawn)
}

func TestFit_LeavesShortLinesAndUnknownWidthsAlone(t *testing.T) {
	require.Equal(t, "abc", fit("abc", 10))
	require.Equal(t, "abcdef", fit("abcdef", 0))
	require.Equal(t, "abcd", fit("abcdef", 5))
}
