package hostile_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// swapInFIFO replaces path by a named pipe that nobody writes to, the way
// a hung NFS or FUSE mount behaves for a reader: a plain open for reading
// blocks forever.
func swapInFIFO(t *testing.T, path string) {
	t.Helper()
	tmp := path + ".fifo"
	if err := syscall.Mkfifo(tmp, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("swap the FIFO in: %v", err)
	}
}

// swapInFile replaces path by a regular file holding content.
func swapInFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("swap the file in: %v", err)
	}
}

// TestPasswordFile_ANamedPipeCannotWedgeTheTargetNorShutdown swaps the
// target's password file for a named pipe and kills the agent's backend,
// so that the next scrape must dial and read the file: the scrape shows the
// target down within its timeout; once the file is fixed, the very next
// scrape is up; and with the pipe back and a dial in progress, SIGTERM
// exits within --web.shutdown-timeout + 1 s. (Before the fix, both probe
// pool slots stayed stuck in the read, the target stayed down after the
// file was fixed, and shutdown never ended.)
func TestPasswordFile_ANamedPipeCannotWedgeTheTargetNorShutdown(t *testing.T) {
	const (
		app             = "pw-fifo"
		scrapeTimeout   = 2 * time.Second
		shutdownTimeout = 2 * time.Second
	)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "mon", monPassword, "LOGIN", "IN ROLE pg_monitor")
	pwFile := filepath.Join(t.TempDir(), "mon.password")
	swapInFile(t, pwFile, monPassword+"\n")
	cfg := fmt.Sprintf(`targets:
  - name: pg
    kind: postgres
    dsn: %s&application_name=%s
    password_file: %s
    scrape_timeout: %s
    probe_pool: {connect_timeout: 1s, acquire_retries: 1}
`, pg.DSN("mon", "", "postgres"), app, pwFile, scrapeTimeout)
	pw := testenv.StartPoolwatch(t, cfg, "--web.shutdown-timeout="+shutdownTimeout.String())
	if up := pw.Scrape(t).Must(t, "poolwatch_target_up", "target", "pg"); up != 1 {
		t.Fatalf("up %v before the attack, want 1", up)
	}

	// The file becomes a pipe; the agent's connection goes, so the next
	// scrape must read the file.
	swapInFIFO(t, pwFile)
	pg.TerminateBackends(t, app)
	pg.WaitBackends(t, app, func(n int) bool { return n == 0 }, 10*time.Second)
	var m testenv.Metrics
	for i := range 2 { // the first round may be handed the dead connection (docs/connections.md)
		start := time.Now()
		m = pw.Scrape(t)
		took := time.Since(start)
		if took > scrapeTimeout+time.Second {
			t.Fatalf("scrape %d with the password file a named pipe took %v, want at most the scrape timeout %v", i, took, scrapeTimeout)
		}
		if m.Must(t, "poolwatch_target_scrape_errors_total", "target", "pg", "query", "connect") > 0 {
			break
		}
	}
	if up := m.Must(t, "poolwatch_target_up", "target", "pg"); up != 0 {
		t.Fatalf("up %v with the password file a named pipe, want 0", up)
	}
	if !strings.Contains(pw.Logs(), "named pipe") {
		t.Errorf("the log does not say the password file is a named pipe:\n%s", pw.Logs())
	}

	// Fixed: the very next scrape is up.
	swapInFile(t, pwFile, monPassword+"\n")
	if up := pw.Scrape(t).Must(t, "poolwatch_target_up", "target", "pg"); up != 1 {
		t.Fatalf("up %v on the first scrape after the file was fixed, want 1\n%s", up, pw.Logs())
	}

	// The pipe again, a scrape dialling, and SIGTERM.
	swapInFIFO(t, pwFile)
	pg.TerminateBackends(t, app)
	pg.WaitBackends(t, app, func(n int) bool { return n == 0 }, 10*time.Second)
	inflight := make(chan struct{})
	go func() {
		defer close(inflight)
		_, _, _ = request(http.DefaultClient, pw.URL+"/metrics")
	}()
	start := time.Now()
	pw.Signal(t, syscall.SIGTERM)
	select {
	case <-pw.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("the agent did not exit within 30 s of SIGTERM with --web.shutdown-timeout=%v", shutdownTimeout)
	}
	took := time.Since(start)
	t.Logf("SIGTERM to exit with the password file a named pipe: %v (--web.shutdown-timeout=%v)", took.Round(time.Millisecond), shutdownTimeout)
	if limit := shutdownTimeout + time.Second; took > limit {
		t.Errorf("exited %v after SIGTERM, want at most %v", took, limit)
	}
	<-inflight
	pw.StopAndCheck(t, monPassword)
}
