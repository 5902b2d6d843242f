package launch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SuperPassword is the password of the "postgres" superuser in every
// cluster launch starts. It exists only in throwaway test clusters.
const SuperPassword = "testenv-super"

// templateRecipe changes whenever the way the template is built changes, so
// that an old cached template is not reused.
const templateRecipe = "v1: initdb -U postgres -E UTF8 --locale=C --wal-segsize=1 -N; hba: local trust, host scram-sha-256"

// hbaConf is the pg_hba.conf of every cluster: trust over the unix socket
// (the admin connections), SCRAM over TCP so a wrong password is a real
// error.
const hbaConf = `# written by poolwatch internal/launch
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
`

// templateCache builds the initdb template at most once per process. It is
// the one piece of package state: its whole point is to be shared by every
// test in the process.
var templateCache struct {
	once sync.Once
	dir  string // .../data of a complete template
	err  error
}

// templateDataDir returns the path of a ready template data directory,
// building it on first use (see the package doc, "initdb cache").
func templateDataDir(r runAs) (string, error) {
	templateCache.once.Do(func() {
		SweepStale(os.TempDir())
		templateCache.dir, templateCache.err = buildTemplate(r)
	})
	return templateCache.dir, templateCache.err
}

func buildTemplate(r runAs) (string, error) {
	initdb, err := LookPath("initdb")
	if err != nil {
		return "", err
	}
	postgres, err := LookPath("postgres")
	if err != nil {
		return "", err
	}
	version, err := exec.Command(postgres, "--version").Output() //nolint:gosec // postgres comes from LookPath
	if err != nil {
		return "", fmt.Errorf("run %s --version: %w", postgres, err)
	}
	uid := "self"
	if r.cred != nil {
		uid = fmt.Sprint(r.cred.Uid)
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{string(version), postgres, templateRecipe, uid}, "\n")))
	key := hex.EncodeToString(sum[:8])

	root := filepath.Join(os.TempDir(), fmt.Sprintf("poolwatch-testenv.cache-%d", os.Geteuid()))
	// 0711: the postgres user must traverse it to run initdb in building-*.
	if err := os.MkdirAll(root, 0o711); err != nil { //nolint:gosec // traverse-only for others, see above
		return "", fmt.Errorf("create template cache %s: %w", root, err)
	}
	if st, err := os.Stat(root); err != nil {
		return "", fmt.Errorf("stat template cache %s: %w", root, err)
	} else if !ownedBySelf(st) {
		return "", fmt.Errorf("template cache %s is not owned by uid %d; remove it", root, os.Geteuid())
	}
	final := filepath.Join(root, "pg-"+key)
	if ok, _ := fileExists(filepath.Join(final, "complete")); ok {
		return filepath.Join(final, "data"), nil
	}
	// A final dir without its marker cannot come from a rename below; it is
	// debris from something else. Move it aside so the rename can succeed.
	if ok, _ := fileExists(final); ok {
		if err := os.RemoveAll(final); err != nil {
			return "", fmt.Errorf("remove incomplete template %s: %w", final, err)
		}
	}

	removeAbandonedBuilds(root)
	tmp, err := os.MkdirTemp(root, "building-")
	if err != nil {
		return "", fmt.Errorf("create template build dir: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()     // no-op after a successful rename
	if err := os.Chmod(tmp, 0o700); err != nil { //nolint:gosec // a directory: 0700 is owner-only
		return "", fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := r.chown(tmp); err != nil {
		return "", err
	}
	pwfile := filepath.Join(tmp, "pwfile")
	if err := r.writeFile(pwfile, []byte(SuperPassword+"\n"), 0o600); err != nil {
		return "", err
	}
	data := filepath.Join(tmp, "data")
	logPath := filepath.Join(tmp, "initdb.log")
	args := []string{
		"-D", data, "-U", "postgres", "--pwfile=" + pwfile,
		"-E", "UTF8", "--locale=C", "--wal-segsize=1", "--no-sync", "--no-instructions",
		"--auth-local=trust", "--auth-host=scram-sha-256",
	}
	start := time.Now()
	p, err := startProcess(r, "initdb", initdb, args, tmp, logPath)
	if err != nil {
		return "", err
	}
	const initdbBudget = 90 * time.Second
	t := time.NewTimer(initdbBudget)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_, _ = p.stop(syscall.SIGKILL, time.Second)
		return "", fmt.Errorf("initdb did not finish within %v; log tail:\n%s", initdbBudget, logTail(logPath, 30))
	}
	if p.waitErr != nil {
		return "", fmt.Errorf("initdb failed after %v: %w; log tail:\n%s", time.Since(start).Round(time.Millisecond), p.waitErr, logTail(logPath, 30))
	}
	if err := r.writeFile(filepath.Join(data, "pg_hba.conf"), []byte(hbaConf), 0o600); err != nil {
		return "", err
	}
	if err := os.Remove(pwfile); err != nil {
		return "", fmt.Errorf("remove pwfile: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write template marker: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another process won the race: use its template.
		if ok, _ := fileExists(filepath.Join(final, "complete")); ok {
			return filepath.Join(final, "data"), nil
		}
		return "", fmt.Errorf("move template into %s: %w", final, err)
	}
	return filepath.Join(final, "data"), nil
}

func fileExists(p string) (bool, error) {
	_, err := os.Lstat(p)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// removeAbandonedBuilds removes template builds left by processes that died
// during initdb. A build takes seconds; one older than an hour is abandoned.
func removeAbandonedBuilds(root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "building-") {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
			_ = os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
}
