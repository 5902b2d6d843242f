package config

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"syscall"
)

// maxPasswordFileSize bounds what a read takes from a password file.
const maxPasswordFileSize = 64 << 10

// PasswordSource says where a target's password comes from when it is not
// written in the DSN: a file (File) or an environment variable (Env). At most
// one is set. The zero value means no source besides the DSN. The tags are
// the target's keys password_file and password_env (see Target).
//
// A PasswordSource is a plain, comparable value: it names the source and
// holds no state. Read it through a PasswordReader (NewReader), which bounds
// every read by the caller's context.
type PasswordSource struct {
	File string `yaml:"password_file" check:"nonempty,path"`
	Env  string `yaml:"password_env" check:"nonempty"`
}

// IsZero reports whether s names no source.
func (s PasswordSource) IsZero() bool { return s == PasswordSource{} }

// NewReader returns a reader of s. Keep one reader per user of the secret
// (the probe pool keeps one for its life): the reader is what bounds the
// goroutines a hung file system can hold (see PasswordReader).
func (s PasswordSource) NewReader() *PasswordReader {
	return &PasswordReader{src: s, open: openNonBlocking}
}

// PasswordReader reads a PasswordSource afresh at every call, so a rotated
// secret is picked up by the next new connection, and never past the
// caller's deadline. Its methods are safe for concurrent use.
//
// A file is opened with O_NONBLOCK and must be a regular file (symbolic
// links to one are followed): a named pipe, socket, device or directory is
// refused at once, never waited on. Opening and reading still run in a
// goroutine of their own, because on a hung network or FUSE file system
// even a regular file's open or read blocks in the kernel, where no context
// reaches: Read returns when its context is done, and that goroutine ends
// when the file system answers. At most one such read is in flight per
// reader. A Read that finds one in flight waits for its result or for its
// own context, and never starts another, so a hung mount holds one
// goroutine per reader, however often connections are attempted. The first
// Read after the read in flight has ended opens the file afresh, so a fixed
// file is read by the next attempt.
type PasswordReader struct {
	src PasswordSource
	// open opens a file for reading without blocking on a named pipe.
	// Tests replace it to simulate a file system whose open blocks.
	open func(path string) (*os.File, error)

	mu sync.Mutex
	// inflight is the file read in progress, nil when none. Guarded by mu.
	inflight *passwordRead
}

// passwordRead is one read of a password file. pw and err are written once,
// before done is closed, and only read after it is closed.
type passwordRead struct {
	done chan struct{}
	pw   string
	err  error
}

// Read returns the current password, or an error when ctx is done first.
// One trailing newline ("\n" or "\r\n") is removed from a file's content.
// An empty password, an empty or unset variable, a file larger than 64 KiB,
// a file that is not a regular file, or an unreadable file is an error.
// Errors name the file or the variable, never the secret, and wrap
// ctx.Err() when the context ended the wait. The zero source returns "" and
// no error.
func (r *PasswordReader) Read(ctx context.Context) (string, error) {
	s := r.src
	switch {
	case s.File != "" && s.Env != "":
		return "", errors.New("password source has both a file and an environment variable")
	case s.File != "":
		return r.readFile(ctx)
	case s.Env != "":
		v := os.Getenv(s.Env)
		if v == "" {
			return "", fmt.Errorf("password environment variable %q is not set or empty", s.Env)
		}
		return v, nil
	default:
		return "", nil
	}
}

// readFile joins the read in flight or starts one, and waits for it or ctx.
func (r *PasswordReader) readFile(ctx context.Context) (string, error) {
	path := r.src.File
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("read password file %q: %w", path, err)
	}
	r.mu.Lock()
	rd := r.inflight
	if rd == nil {
		rd = &passwordRead{done: make(chan struct{})}
		r.inflight = rd
		go r.run(rd)
	}
	r.mu.Unlock()
	select {
	case <-rd.done:
		return rd.pw, rd.err
	case <-ctx.Done():
		return "", fmt.Errorf("read password file %q: gave up waiting: %w", path, ctx.Err())
	}
}

// run performs rd and lets the next Read start a new one.
func (r *PasswordReader) run(rd *passwordRead) {
	rd.pw, rd.err = readPasswordFile(r.open, r.src.File)
	r.mu.Lock()
	r.inflight = nil
	r.mu.Unlock()
	close(rd.done)
}

// openNonBlocking opens path read-only with O_NONBLOCK, so that opening a
// named pipe returns at once instead of waiting for a writer.
func openNonBlocking(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0) //nolint:gosec // the path comes from the operator's config
}

func readPasswordFile(open func(string) (*os.File, error), path string) (string, error) {
	f, err := open(path)
	if err != nil {
		return "", fmt.Errorf("open password file: %w", err)
	}
	defer func() { _ = f.Close() }()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat password file %q: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("password file %q is %s, not a regular file", path, fileType(info.Mode()))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordFileSize+1))
	if err != nil {
		return "", fmt.Errorf("read password file %q: %w", path, err)
	}
	if len(b) > maxPasswordFileSize {
		return "", fmt.Errorf("password file %q is larger than %d bytes", path, maxPasswordFileSize)
	}
	pw := string(b)
	if p, ok := strings.CutSuffix(pw, "\n"); ok {
		pw = strings.TrimSuffix(p, "\r")
	}
	if pw == "" {
		return "", fmt.Errorf("password file %q is empty", path)
	}
	return pw, nil
}

// fileType names a non-regular file's type for an error message.
func fileType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return "a special file"
	}
}
