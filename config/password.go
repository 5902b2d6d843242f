package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxPasswordFileSize bounds what Read reads from a password file.
const maxPasswordFileSize = 64 << 10

// PasswordSource says where a target's password comes from when it is not
// written in the DSN: a file (File) or an environment variable (Env). At most
// one is set. The zero value means no source besides the DSN. The tags are
// the target's keys password_file and password_env (see Target).
type PasswordSource struct {
	File string `yaml:"password_file" check:"nonempty,path"`
	Env  string `yaml:"password_env" check:"nonempty"`
}

// IsZero reports whether s names no source.
func (s PasswordSource) IsZero() bool { return s == PasswordSource{} }

// Read returns the current password. It reads the file or the environment
// variable at every call, so a rotated secret is picked up by the next new
// connection; call it from pgx's BeforeConnect. One trailing newline ("\n"
// or "\r\n") is removed from a file's content. An empty password, an empty
// or unset variable, a file larger than 64 KiB or an unreadable file is an
// error. Errors name the file or the variable, never the secret. The zero
// source returns "" and no error.
func (s PasswordSource) Read() (string, error) {
	switch {
	case s.File != "" && s.Env != "":
		return "", errors.New("password source has both a file and an environment variable")
	case s.File != "":
		return readPasswordFile(s.File)
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

func readPasswordFile(path string) (string, error) {
	f, err := os.Open(path) //nolint:gosec // the path comes from the operator's config
	if err != nil {
		return "", fmt.Errorf("open password file: %w", err)
	}
	defer func() { _ = f.Close() }()
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
