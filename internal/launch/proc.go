package launch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runAs says which user server processes run as and who owns their files.
// cred is nil when the test process is not root: children then run as the
// current user and no chown is needed.
type runAs struct {
	cred *syscall.Credential
}

// serverUser resolves the user to run servers as: the "postgres" system user
// when running as root, the current user otherwise.
func serverUser() (runAs, error) {
	if os.Geteuid() != 0 {
		return runAs{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return runAs{}, fmt.Errorf("running as root needs a %q system user to run the servers: %w", "postgres", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return runAs{}, fmt.Errorf("parse uid %q of user postgres: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return runAs{}, fmt.Errorf("parse gid %q of user postgres: %w", u.Gid, err)
	}
	return runAs{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}, nil
}

// chown gives path to the server user (no-op when not root).
func (r runAs) chown(path string) error {
	if r.cred == nil {
		return nil
	}
	if err := os.Lchown(path, int(r.cred.Uid), int(r.cred.Gid)); err != nil {
		return fmt.Errorf("chown %s to the server user: %w", path, err)
	}
	return nil
}

// writeFile writes a file owned by the server user.
func (r runAs) writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return r.chown(path)
}

// tempPrefix starts every directory launch creates under os.TempDir(); the
// pid lets SweepStale tell live runs from crashed ones.
const tempPrefix = "poolwatch-testenv-"

// MkdirTemp creates a directory under os.TempDir() named like launch's own
// (poolwatch-testenv-<kind>-<pid>-<rand>; kind must not contain "-"), so
// that a later run removes it once this process has exited (see
// SweepStale).
func MkdirTemp(kind string) (string, error) {
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%s-%d-", tempPrefix, kind, os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("create %s temp dir: %w", kind, err)
	}
	return dir, nil
}

// makeServerDir creates a 0700 temp dir owned by the server user. The name
// embeds kind and this process's pid: poolwatch-testenv-<kind>-<pid>-<rand>.
func (r runAs) makeServerDir(kind string) (string, error) {
	dir, err := MkdirTemp(kind)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o700); err != nil { //nolint:gosec // a directory: 0700 is owner-only
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("chmod %s: %w", dir, err)
	}
	if err := r.chown(dir); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// process is a child server process. Its stdout and stderr go to a log file
// (no copying goroutines); one goroutine waits for its exit.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited and been reaped
	waitErr error         // valid after done is closed
}

// childEnv is the whole environment given to servers: nothing from the
// test's environment (PGPORT, PGDATA, LANG...) leaks into them.
func childEnv(home string) []string {
	return []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL=C", "LANG=C", "HOME=" + home, "TZ=UTC"}
}

// startProcess starts bin with args in dir, as r's user, appending its
// output to logPath. The child gets SIGKILL if the test process dies.
func startProcess(r runAs, name, bin string, args []string, dir, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // path built by launch in its own temp dir
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer func() { _ = logf.Close() }() // the child has its own copy of the descriptor
	if err := r.chown(logPath); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...) //nolint:gosec // bin comes from LookPath, args from launch
	cmd.Dir = dir
	cmd.Env = childEnv(dir)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: r.cred,
		// Go sets the parent-death signal after switching credentials, so it
		// survives the switch to the postgres user. It fires when the test
		// process dies.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// pid returns the child's pid.
func (p *process) pid() int { return p.cmd.Process.Pid }

// stop sends sig, waits up to grace for the exit, then sends SIGKILL and
// waits up to 10 s more. It returns the exit error as reported by Wait (the
// caller decides which exit statuses are expected) or an error if the
// process could not be reaped at all.
func (p *process) stop(sig syscall.Signal, grace time.Duration) (exitErr error, err error) {
	if !p.exited() {
		if serr := p.cmd.Process.Signal(sig); serr != nil && !errors.Is(serr, os.ErrProcessDone) {
			return nil, fmt.Errorf("signal %s with %v: %w", p.name, sig, serr)
		}
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.waitErr, nil
	case <-t.C:
	}
	if kerr := p.cmd.Process.Kill(); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
		return nil, fmt.Errorf("kill %s after %v: %w", p.name, grace, kerr)
	}
	t2 := time.NewTimer(10 * time.Second)
	defer t2.Stop()
	select {
	case <-p.done:
		return p.waitErr, fmt.Errorf("%s did not exit within %v of %v and was killed", p.name, grace, sig)
	case <-t2.C:
		return nil, fmt.Errorf("%s (pid %d) did not exit even after SIGKILL", p.name, p.pid())
	}
}

// logTail returns the last lines of a log file, for failure messages.
func logTail(path string, lines int) string {
	f, err := os.Open(path) //nolint:gosec // a log file in launch's own temp dir
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer func() { _ = f.Close() }()
	const maxTail = 16 << 10
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(stat log: %v)", err)
	}
	off := st.Size() - maxTail
	if off < 0 {
		off = 0
	}
	buf, err := io.ReadAll(io.NewSectionReader(f, off, maxTail))
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	buf = bytes.TrimRight(buf, "\n")
	all := strings.Split(string(buf), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return "\t" + strings.Join(all, "\n\t")
}

// copyTree copies the directory src to dst (which must not exist),
// preserving modes and giving everything to r's user.
func (r runAs) copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return fmt.Errorf("relative path of %s: %w", path, err)
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("stat %s: %w", path, err)
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return fmt.Errorf("mkdir %s: %w", target, err)
			}
			if err := os.Chmod(target, info.Mode().Perm()); err != nil { // undo umask
				return fmt.Errorf("chmod %s: %w", target, err)
			}
		case d.Type().IsRegular(): // the template holds only directories and regular files
			if err := copyFile(path, target, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("copy %s: unsupported file type %v", path, d.Type())
		}
		return r.chown(target)
	})
}

func copyFile(src, dst string, mode os.FileMode) (err error) {
	in, err := os.Open(src) //nolint:gosec // copying launch's own template
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode) //nolint:gosec // into launch's own temp dir
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	defer func() {
		if cerr := out.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close %s: %w", dst, cerr)
		}
	}()
	if _, err := io.Copy(out, in); err != nil { // copy_file_range on Linux
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}

// pidAlive reports whether a process with this pid exists and has not
// exited (a zombie waiting to be reaped counts as exited; EPERM counts as
// alive: the process exists but belongs to someone else).
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return !isZombie(pid)
}

// isZombie reports whether /proc says pid is a zombie.
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) STATE ...": comm may contain spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// SweepStale removes directories left in tmp by runs whose process
// no longer exists (a test binary killed before its cleanups ran). A
// directory is kept when its owner pid is alive or when a postmaster.pid in
// it names a live process; nothing is ever killed. It returns the removed
// paths.
func SweepStale(tmp string) []string {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, tempPrefix) {
			continue
		}
		// poolwatch-testenv-<kind>-<pid>-<rand>
		parts := strings.Split(strings.TrimPrefix(name, tempPrefix), "-")
		if len(parts) != 3 {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || pid == os.Getpid() || pidAlive(pid) {
			continue
		}
		dir := filepath.Join(tmp, name)
		if b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid")); err == nil { //nolint:gosec // launch's own dir naming
			first, _, _ := strings.Cut(string(b), "\n")
			if pm, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && pidAlive(pm) {
				continue
			}
		}
		if err := os.RemoveAll(dir); err == nil {
			removed = append(removed, dir)
		}
	}
	return removed
}

// ownedBySelf reports whether a file belongs to the effective user.
func ownedBySelf(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(sys.Uid) == os.Geteuid()
}

// WriteServerFiles writes files (name -> content) with mode 0600 into a new
// 0700 directory owned by the user the servers run as, so that PostgreSQL
// accepts them as ssl_key_file, hba_file and the like. It returns the
// directory, which the caller removes, and name -> absolute path.
func WriteServerFiles(files map[string][]byte) (string, map[string]string, error) {
	r, err := serverUser()
	if err != nil {
		return "", nil, err
	}
	dir, err := r.makeServerDir("files")
	if err != nil {
		return "", nil, err
	}
	paths := make(map[string]string, len(files))
	for name, data := range files {
		p := filepath.Join(dir, name)
		if name != filepath.Base(name) {
			err = fmt.Errorf("server file name %q must be a plain file name", name)
		} else {
			err = r.writeFile(p, data, 0o600)
		}
		if err != nil {
			_ = os.RemoveAll(dir)
			return "", nil, err
		}
		paths[name] = p
	}
	return dir, paths, nil
}
