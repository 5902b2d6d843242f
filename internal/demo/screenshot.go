package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// screenshotBudget bounds one Chromium run, start to exit.
const screenshotBudget = 90 * time.Second

// Size of the picture, in CSS pixels.
const (
	shotWidth  = 1280
	shotHeight = 760
)

// chromiumArgs are the flags of a headless Chromium that renders url into
// the PNG out and exits, on this kind of machine: no sandbox (root), no GPU,
// no background networking (whose connections a closed network refuses).
// profile must be a new, empty directory.
func chromiumArgs(profile, out, url string) []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars",
		"--user-data-dir=" + profile,
		fmt.Sprintf("--window-size=%d,%d", shotWidth, shotHeight),
		"--screenshot=" + out,
		url,
	}
}

// takeScreenshot renders url in headless Chromium and writes a PNG to out.
// Chromium writes a temporary file next to out, which is renamed into
// place, so out is either the new picture or untouched. Chromium and
// everything it forks run in one process group, killed when it is done;
// its profile and log live in dir.
func takeScreenshot(ctx context.Context, chromium, dir, url, out string) error {
	bin, err := exec.LookPath(chromium)
	if err != nil {
		return fmt.Errorf("headless Chromium is needed for the screenshot (apt-get install chromium): %w", err)
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("screenshot path: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil { //nolint:gosec // docs/img is a public repository directory
		return fmt.Errorf("create %s: %w", filepath.Dir(abs), err)
	}
	profile, err := os.MkdirTemp(dir, "chromium-profile-")
	if err != nil {
		return fmt.Errorf("create a Chromium profile: %w", err)
	}
	tmp := abs + ".tmp.png"
	defer func() { _ = os.Remove(tmp) }() //nolint:gosec // G703: next to the path the user asked for
	ctx, cancel := context.WithTimeout(ctx, screenshotBudget)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, chromiumArgs(profile, tmp, url)...) //nolint:gosec // Chromium from LookPath, flags above
	cmd.Dir = profile
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + profile, "LC_ALL=C", "TZ=UTC"}
	// Its own process group, so that the end takes everything it forked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	logf, err := os.Create(filepath.Join(dir, "chromium.log")) //nolint:gosec // in the demo's directory
	if err != nil {
		return fmt.Errorf("create the Chromium log: %w", err)
	}
	defer func() { _ = logf.Close() }()
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever it left behind
	}
	if err != nil {
		return fmt.Errorf("chromium: %w; log: %s", err, logf.Name())
	}
	if st, err := os.Stat(tmp); err != nil || st.Size() == 0 { //nolint:gosec // G703: see above
		return errors.Join(errors.New("chromium wrote no screenshot"), err)
	}
	if err := os.Rename(tmp, abs); err != nil { //nolint:gosec // G703: the path the user asked for
		return fmt.Errorf("move the screenshot into place: %w", err)
	}
	return nil
}
