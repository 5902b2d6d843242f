package config

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// read reads src once with a generous deadline.
func read(t *testing.T, src PasswordSource) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return src.NewReader().Read(ctx)
}

func TestPasswordReader_TrimsOneTrailingNewline(t *testing.T) {
	for content, want := range map[string]string{
		"S3cret":       "S3cret",
		"S3cret\n":     "S3cret",
		"S3cret\r\n":   "S3cret",
		"S3cret\n\n":   "S3cret\n",
		" S3 cret \n":  " S3 cret ",
		"S3cret\r":     "S3cret\r",
		"line1\nline2": "line1\nline2",
	} {
		got, err := read(t, PasswordSource{File: writeFile(t, content)})
		require.NoError(t, err)
		require.Equal(t, want, got, "content %q", content)
	}
}

func TestPasswordReader_RereadsTheFileOnEveryCall(t *testing.T) {
	p := writeFile(t, "S3cret-old\n")
	r := PasswordSource{File: p}.NewReader()
	got, err := r.Read(context.Background())
	require.NoError(t, err)
	require.Equal(t, "S3cret-old", got)

	require.NoError(t, os.WriteFile(p, []byte("S3cret-rotated\n"), 0o600))
	got, err = r.Read(context.Background())
	require.NoError(t, err)
	require.Equal(t, "S3cret-rotated", got)
}

func TestPasswordReader_ReadsTheEnvironmentOnEveryCall(t *testing.T) {
	t.Setenv("POOLWATCH_TEST_PW", "S3cret-1")
	r := PasswordSource{Env: "POOLWATCH_TEST_PW"}.NewReader()
	got, err := r.Read(context.Background())
	require.NoError(t, err)
	require.Equal(t, "S3cret-1", got)
	t.Setenv("POOLWATCH_TEST_PW", "S3cret-2")
	got, err = r.Read(context.Background())
	require.NoError(t, err)
	require.Equal(t, "S3cret-2", got)
}

func TestPasswordReader_ErrorsNameTheSourceNeverTheSecret(t *testing.T) {
	big := writeFile(t, strings.Repeat("S3cret", maxPasswordFileSize))
	empty := writeFile(t, "\n")
	missing := filepath.Join(t.TempDir(), "missing")
	dir := t.TempDir()
	t.Setenv("POOLWATCH_TEST_EMPTY_PW", "")
	cases := map[string]struct {
		src  PasswordSource
		want string
	}{
		"too large":  {PasswordSource{File: big}, `password file "` + big + `" is larger than 65536 bytes`},
		"empty file": {PasswordSource{File: empty}, `password file "` + empty + `" is empty`},
		"missing":    {PasswordSource{File: missing}, "open password file: open " + missing + ": no such file or directory"},
		"directory":  {PasswordSource{File: dir}, `password file "` + dir + `" is a directory, not a regular file`},
		"device":     {PasswordSource{File: "/dev/null"}, `password file "/dev/null" is a device, not a regular file`},
		"empty env":  {PasswordSource{Env: "POOLWATCH_TEST_EMPTY_PW"}, `password environment variable "POOLWATCH_TEST_EMPTY_PW" is not set or empty`},
		"both":       {PasswordSource{File: big, Env: "X"}, "password source has both a file and an environment variable"},
		"unset env":  {PasswordSource{Env: "POOLWATCH_TEST_UNSET_PW_VAR"}, `password environment variable "POOLWATCH_TEST_UNSET_PW_VAR" is not set or empty`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := read(t, tc.src)
			require.Error(t, err)
			require.Empty(t, got)
			require.Equal(t, tc.want, err.Error())
			requireNoSecret(t, err.Error())
		})
	}
}

func TestPasswordSource_ZeroHasNoPassword(t *testing.T) {
	require.True(t, PasswordSource{}.IsZero())
	require.False(t, PasswordSource{Env: "X"}.IsZero())
	got, err := read(t, PasswordSource{})
	require.NoError(t, err)
	require.Empty(t, got)
}

// mkfifo creates a named pipe in a temporary directory.
func mkfifo(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, syscall.Mkfifo(p, 0o600))
	return p
}

// TestPasswordReader_RefusesANamedPipeWithoutWaitingForAWriter: nobody ever
// writes to the pipe. A read that waited for a writer would end only at the
// 10 s deadline, with context.DeadlineExceeded.
func TestPasswordReader_RefusesANamedPipeWithoutWaitingForAWriter(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fifo := mkfifo(t, "pw")
	got, err := read(t, PasswordSource{File: fifo})
	require.Empty(t, got)
	require.EqualError(t, err, `password file "`+fifo+`" is a named pipe, not a regular file`)

	// Fixed: the pipe is replaced by a regular file; the next read works.
	require.NoError(t, os.Remove(fifo))
	require.NoError(t, os.WriteFile(fifo, []byte("S3cret-fixed\n"), 0o600))
	got, err = read(t, PasswordSource{File: fifo})
	require.NoError(t, err)
	require.Equal(t, "S3cret-fixed", got)
}

// hangingFS simulates a hung network file system, which cannot be had here:
// while hung, open blocks in the kernel (a real open(2) of a named pipe
// without O_NONBLOCK, which no context can interrupt) until unhang opens the
// pipe's other end.
type hangingFS struct {
	gate  string
	hung  atomic.Bool
	opens atomic.Int64 // opens started
}

func newHangingFS(t *testing.T) *hangingFS {
	h := &hangingFS{gate: mkfifo(t, "gate")}
	h.hung.Store(true)
	return h
}

func (h *hangingFS) open(path string) (*os.File, error) {
	h.opens.Add(1)
	if h.hung.Load() {
		g, err := os.Open(h.gate) // blocks until unhang opens the write end
		if err != nil {
			return nil, err
		}
		_ = g.Close()
	}
	return openNonBlocking(path)
}

// unhang lets the file system answer again and releases the blocked open.
func (h *hangingFS) unhang(t *testing.T) {
	t.Helper()
	h.hung.Store(false)
	w, err := os.OpenFile(h.gate, os.O_WRONLY, 0) // meets the blocked reader
	require.NoError(t, err)
	require.NoError(t, w.Close())
}

// pollReaders polls until exactly want goroutines run a password read
// (PasswordReader.run), as their stacks show. It counts those goroutines
// only: runtime.NumGoroutine also counts what earlier tests left to wind
// down, which on a loaded machine can end in the middle of this one.
func pollReaders(t *testing.T, want int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	testenv.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) {
		stacks := string(buf[:runtime.Stack(buf, true)])
		n := 0
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "(*PasswordReader).run(") {
				n++
			}
		}
		return n == want, fmt.Sprintf("%d goroutines run a password read, want %d", n, want)
	})
}

// waitForJoiner polls until a goroutine waits in readFile for the read in
// flight, as its stack shows.
func waitForJoiner(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	testenv.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) {
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "[select") && strings.Contains(g, "(*PasswordReader).readFile") {
				return true, ""
			}
		}
		return false, "no read joined the one in flight:\n" + stacks
	})
}

// TestPasswordReader_HungFileSystemCostsOneGoroutineAndEachReadItsDeadline:
// reads against a hung file system return at their own deadline; however
// many there are, one open is in flight; the one after the file system
// recovers succeeds; nothing is left behind.
func TestPasswordReader_HungFileSystemCostsOneGoroutineAndEachReadItsDeadline(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	pw := writeFile(t, "S3cret-nfs\n")
	fs := newHangingFS(t)
	r := PasswordSource{File: pw}.NewReader()
	r.open = fs.open

	// Sequential and concurrent reads, each with a short deadline.
	type result struct {
		pw  string
		err error
	}
	const n = 20
	var wg sync.WaitGroup
	results := make(chan result, 2*n)
	readOnce := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		pw, err := r.Read(ctx)
		results <- result{pw, err}
	}
	for range n {
		readOnce()
		wg.Add(1)
		go func() { defer wg.Done(); readOnce() }()
	}
	wg.Wait()
	close(results)
	for res := range results {
		require.Empty(t, res.pw)
		require.ErrorIs(t, res.err, context.DeadlineExceeded)
		require.Contains(t, res.err.Error(), `read password file "`+pw+`": gave up waiting`)
	}
	require.Equal(t, int64(1), fs.opens.Load(), "one open in flight, however many reads")
	pollReaders(t, 1) // one goroutine blocked in the file system, however many reads

	// A read that joins the one in flight gets its result when the file
	// system answers.
	joined := make(chan result, 1)
	go func() {
		pw, err := r.Read(context.Background())
		joined <- result{pw, err}
	}()
	waitForJoiner(t)
	fs.unhang(t)
	res := <-joined
	require.NoError(t, res.err)
	require.Equal(t, "S3cret-nfs", res.pw)
	require.Equal(t, int64(1), fs.opens.Load(), "the joining read started no open of its own")

	// Recovered: the next read opens afresh and succeeds.
	got, err := r.Read(context.Background())
	require.NoError(t, err)
	require.Equal(t, "S3cret-nfs", got)
	require.Equal(t, int64(2), fs.opens.Load())
}

func TestPasswordReader_ReadWithADoneContextFailsAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	pw := writeFile(t, "S3cret\n")
	got, err := PasswordSource{File: pw}.NewReader().Read(ctx)
	require.Empty(t, got)
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, err.Error(), pw)
}
