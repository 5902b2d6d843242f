package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/go-logfmt/logfmt"
)

// followLeakLog watches poolwatch's log and prints the culprit of each leak
// it logs (msg="leaked connection": pool, application_name, user, client
// address, how long it has been held).
func (d *demo) followLeakLog(ctx context.Context) {
	followLines(ctx, d.pw.LogPath, time.Second, func(line string) bool {
		if s, ok := leakCulprit(line); ok {
			d.scr.event("poolwatch logs the culprit: %s", s)
		}
		return true
	})
}

// followLines reads the file at path every interval and calls line with
// each complete line it has gained since (without the newline), in order,
// until ctx is done or line returns false. A line still being written is
// held until its newline arrives; a read that fails is tried again at the
// next tick.
func followLines(ctx context.Context, path string, interval time.Duration, line func(string) bool) {
	var off int64
	var partial []byte
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		chunk, next, err := readFrom(path, off)
		if err != nil {
			continue
		}
		off = next
		partial = append(partial, chunk...)
		for {
			i := bytes.IndexByte(partial, '\n')
			if i < 0 {
				break
			}
			l := string(partial[:i])
			partial = partial[i+1:]
			if !line(l) {
				return
			}
		}
	}
}

// readFrom returns what a file holds from off on, and the new offset. At
// most 1 MiB is read per call.
func readFrom(path string, off int64) ([]byte, int64, error) {
	f, err := os.Open(path) //nolint:gosec // poolwatch's log in the demo's directory
	if err != nil {
		return nil, off, fmt.Errorf("open %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.NewSectionReader(f, off, 1<<20))
	if err != nil {
		return nil, off, fmt.Errorf("read %s: %w", path, err)
	}
	return b, off + int64(len(b)), nil
}

// leakCulprit turns a poolwatch log line with msg="leaked connection" into
// "target=... pool=... application_name=... held_for=...", leaving out the
// time stamp, caller, level and message. Other lines give false.
func leakCulprit(line string) (string, bool) {
	dec := logfmt.NewDecoder(strings.NewReader(line))
	if !dec.ScanRecord() {
		return "", false
	}
	var kept []string
	isLeak := false
	for dec.ScanKeyval() {
		k, v := string(dec.Key()), string(dec.Value())
		switch k {
		case "msg":
			isLeak = v == "leaked connection"
		case "ts", "caller", "level":
		default:
			if strings.ContainsAny(v, " \"=") {
				v = fmt.Sprintf("%q", v)
			}
			kept = append(kept, k+"="+v)
		}
	}
	if dec.Err() != nil || !isLeak {
		return "", false
	}
	return strings.Join(kept, " "), true
}
