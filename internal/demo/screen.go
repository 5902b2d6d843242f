package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// screen is the demo's terminal output: event lines (phases, pages) and
// the live pool summary. On a terminal the summary is one block redrawn in
// place under the events; otherwise (a pipe or a file) the block is printed
// every plainEvery, so that a captured run stays readable. It is safe for
// concurrent use.
type screen struct {
	w          io.Writer
	tty        bool
	plainEvery time.Duration
	now        func() time.Time
	// width returns the terminal's width in columns, 0 if unknown. Block
	// lines are cut to it: a wrapped line would break the redraw.
	width func() int

	mu        sync.Mutex
	zero      time.Time // the clock's zero: when the services were ready
	block     []string  // the last pool summary
	drawn     int       // lines of block on the terminal (tty only)
	lastPlain time.Time // when the block was last printed (non-tty)
}

// newScreen writes to w; it redraws in place only if w is a terminal.
func newScreen(w io.Writer) *screen {
	s := &screen{w: w, plainEvery: 10 * time.Second, now: time.Now, width: func() int { return 0 }}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			s.tty = os.Getenv("TERM") != "dumb"
			s.width = func() int {
				ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ) //nolint:gosec // G115: a file descriptor fits an int
				if err != nil {
					return 0
				}
				return int(ws.Col)
			}
		}
	}
	return s
}

// fit cuts line to fit in width columns without wrapping (width 0: as is).
func fit(line string, width int) string {
	if width <= 1 || len(line) < width {
		return line
	}
	r := []rune(line)
	if len(r) < width {
		return line
	}
	return string(r[:width-1])
}

// startClock makes event lines carry the time since now, "[ 12s]".
func (s *screen) startClock() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zero = s.now()
}

// stamp returns the event prefix: "[ 12s] " once the clock runs, else "".
func (s *screen) stamp() string {
	if s.zero.IsZero() {
		return ""
	}
	return fmt.Sprintf("[%4.0fs] ", s.now().Sub(s.zero).Seconds())
}

// eraseLocked removes the drawn block from the terminal.
func (s *screen) eraseLocked() {
	if s.tty && s.drawn > 0 {
		fmt.Fprintf(s.w, "\x1b[%dA\x1b[J", s.drawn)
		s.drawn = 0
	}
}

// drawLocked draws the block under the events (tty only).
func (s *screen) drawLocked() {
	if !s.tty || len(s.block) == 0 {
		return
	}
	w := s.width()
	for _, l := range s.block {
		fmt.Fprintln(s.w, fit(l, w))
	}
	s.drawn = len(s.block)
}

// line prints text as it is, above the live block.
func (s *screen) line(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eraseLocked()
	fmt.Fprintf(s.w, format+"\n", args...)
	s.drawLocked()
}

// event prints a time-stamped line above the live block.
func (s *screen) event(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eraseLocked()
	fmt.Fprintf(s.w, s.stamp()+format+"\n", args...)
	s.drawLocked()
}

// colour wraps text in an ANSI colour on a terminal: "31" red, "32" green,
// "33" yellow, "1" bold.
func (s *screen) colour(code, text string) string {
	if !s.tty {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

// pools replaces the live summary with these pool lines.
func (s *screen) pools(lines []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	block := make([]string, 0, len(lines)+1)
	header := "pools (from poolwatch /metrics)"
	if !s.zero.IsZero() {
		header = fmt.Sprintf("%spools (from poolwatch /metrics):", s.stamp())
	}
	block = append(block, header)
	for _, l := range lines {
		block = append(block, "    "+l)
	}
	if s.tty {
		s.eraseLocked()
		s.block = block
		s.drawLocked()
		return
	}
	s.block = block
	if now := s.now(); now.Sub(s.lastPlain) >= s.plainEvery {
		s.lastPlain = now
		fmt.Fprintln(s.w, strings.Join(block, "\n"))
	}
}

// flushPools prints the current block now (non-tty; on a terminal it is
// always shown) and restarts the plainEvery period.
func (s *screen) flushPools() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tty || len(s.block) == 0 {
		return
	}
	s.lastPlain = s.now()
	fmt.Fprintln(s.w, strings.Join(s.block, "\n"))
}

// freeze stops redrawing: the last block stays on the terminal as it is and
// later lines go under it.
func (s *screen) freeze() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drawn = 0
	s.block = nil
}
