package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

// screenshotBudget bounds one Chromium run, start to exit.
const screenshotBudget = 90 * time.Second

// Size of the picture, in CSS pixels.
const (
	shotWidth  = 1280
	shotHeight = 1060
)

// chromiumArgs are the flags of a headless Chromium on this kind of machine:
// no sandbox (root), no GPU, and no background networking, whose
// connections a closed network refuses. profile must be a new, empty
// directory. The DevTools protocol runs over file descriptors 3 and 4.
func chromiumArgs(profile string) []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars",
		"--user-data-dir=" + profile,
		fmt.Sprintf("--window-size=%d,%d", shotWidth, shotHeight),
		"--remote-debugging-pipe",
		"about:blank",
	}
}

// What a user does on Prometheus' classic alerts page (Debian's build has
// only that one) before looking: click "Inactive" so that only pending and
// firing rules are listed, open the firing rules and show their
// annotations. The clicks run the page's own handlers (alerts.js).
// Upstream's React UI has none of these elements; there nothing changes.
const (
	// inactiveFilterAt returns the centre of the "Inactive" filter button
	// as [x, y], or null.
	inactiveFilterAt = `(() => {
  const input = document.getElementById('inactiveAlerts');
  if (!input) { return null; }
  const r = input.parentElement.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2];
})()`
	expandFiringAlerts = `(() => {
  if (typeof $ !== 'function') { return 'no jQuery'; }
  $('tr.alert-danger.alert_header').click();
  $('div.show-annotations').click();
  if (document.activeElement) { document.activeElement.blur(); }
  return 'ok';
})()`
)

// takeScreenshot renders url in headless Chromium, opens the firing alerts
// (expandFiringAlerts) and writes a PNG to out. It writes a temporary file
// next to out and renames it into place, so out is either the new picture
// or untouched. Chromium and everything it forks run in one process group,
// killed when it is done; its profile and log live in dir.
func takeScreenshot(ctx context.Context, chromium, dir, url, out string) error {
	bin, err := exec.LookPath(chromium)
	if err != nil {
		return fmt.Errorf("headless Chromium is needed for the screenshot (apt-get install chromium): %w", err)
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("screenshot path: %w", err)
	}
	profile, err := os.MkdirTemp(dir, "chromium-profile-")
	if err != nil {
		return fmt.Errorf("create a Chromium profile: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, screenshotBudget)
	defer cancel()
	png, err := capture(ctx, bin, profile, filepath.Join(dir, "chromium.log"), url)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil { //nolint:gosec // docs/img is a public repository directory
		return fmt.Errorf("create %s: %w", filepath.Dir(abs), err)
	}
	tmp := abs + ".tmp"
	if err := os.WriteFile(tmp, png, 0o644); err != nil { //nolint:gosec // a picture for the repository's docs
		return fmt.Errorf("write the screenshot: %w", err)
	}
	if err := os.Rename(tmp, abs); err != nil { //nolint:gosec // G703: the path the user asked for
		_ = os.Remove(tmp) //nolint:gosec // G703: see above
		return fmt.Errorf("move the screenshot into place: %w", err)
	}
	return nil
}

// capture runs Chromium and drives it over the DevTools protocol: open url,
// wait for it to load, expand the firing alerts, take the picture, close.
func capture(ctx context.Context, bin, profile, logPath, url string) ([]byte, error) {
	// fd 3: Chromium reads commands; fd 4: it writes answers and events.
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		_ = cmdR.Close()
		_ = cmdW.Close()
		return nil, fmt.Errorf("pipe: %w", err)
	}
	cmd := exec.Command(bin, chromiumArgs(profile)...) //nolint:gosec // Chromium from LookPath, flags above
	cmd.Dir = filepath.Dir(profile)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + profile, "LC_ALL=C", "TZ=UTC"}
	cmd.ExtraFiles = []*os.File{cmdR, respW}
	// Its own process group, so that stopping it takes everything it forked.
	c, stop, err := testenv.LaunchCommand("chromium", cmd, logPath, testenv.ProcessOptions{StopGrace: 10 * time.Second, ProcessGroup: true})
	// The child has its own copies.
	_ = cmdR.Close()
	_ = respW.Close()
	if err != nil {
		_ = cmdW.Close()
		_ = respR.Close()
		return nil, err
	}
	cdp := newCDP(cmdW, respR)
	defer func() {
		// Close the browser politely, then make sure its whole group is gone.
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, _ = cdp.call(cctx, "", "Browser.close", nil)
		ccancel()
		_ = cmdW.Close()
		_ = stop()
		_ = respR.Close()
	}()

	png, err := drive(ctx, cdp, url)
	if err != nil {
		return nil, fmt.Errorf("%w; chromium log:\n%s", err, c.LogTail(10))
	}
	return png, nil
}

// drive runs the DevTools commands of one screenshot.
func drive(ctx context.Context, cdp *cdp, url string) ([]byte, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := cdp.callInto(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return nil, err
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := cdp.callInto(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached); err != nil {
		return nil, err
	}
	s := attached.SessionID
	if _, err := cdp.call(ctx, s, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": shotWidth, "height": shotHeight, "deviceScaleFactor": 1, "mobile": false,
	}); err != nil {
		return nil, err
	}
	if _, err := cdp.call(ctx, s, "Page.navigate", map[string]any{"url": url}); err != nil {
		return nil, err
	}
	// Loaded: the document is complete and its scripts ran.
	for {
		var res evalResult
		if err := cdp.callInto(ctx, s, "Runtime.evaluate", map[string]any{
			"expression": "document.readyState === 'complete' && location.href !== 'about:blank'", "returnByValue": true,
		}, &res); err != nil {
			return nil, err
		}
		if string(res.Result.Value) == "true" {
			break
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return nil, fmt.Errorf("page %s did not load: %w", url, ctx.Err())
		}
	}
	var at evalResult
	if err := cdp.callInto(ctx, s, "Runtime.evaluate", map[string]any{"expression": inactiveFilterAt, "returnByValue": true}, &at); err != nil {
		return nil, err
	}
	var xy []float64
	if json.Unmarshal(at.Result.Value, &xy) == nil && len(xy) == 2 {
		for _, typ := range []string{"mousePressed", "mouseReleased"} {
			if _, err := cdp.call(ctx, s, "Input.dispatchMouseEvent", map[string]any{
				"type": typ, "x": xy[0], "y": xy[1], "button": "left", "clickCount": 1,
			}); err != nil {
				return nil, err
			}
		}
	}
	var res evalResult
	if err := cdp.callInto(ctx, s, "Runtime.evaluate", map[string]any{"expression": expandFiringAlerts, "returnByValue": true}, &res); err != nil {
		return nil, err
	}
	if !sleep(ctx, 500*time.Millisecond) { // let it lay out
		return nil, ctx.Err()
	}
	var shot struct {
		Data string `json:"data"`
	}
	if err := cdp.callInto(ctx, s, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		return nil, err
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		return nil, fmt.Errorf("decode the screenshot: %w", err)
	}
	if len(png) == 0 {
		return nil, errors.New("chromium returned an empty screenshot")
	}
	return png, nil
}

// evalResult is the answer of Runtime.evaluate with returnByValue.
type evalResult struct {
	Result struct {
		Value json.RawMessage `json:"value"`
	} `json:"result"`
}

// cdp is a client of Chromium's DevTools protocol over --remote-debugging-pipe:
// JSON messages, each ended by a NUL byte. Answers are matched to calls by
// id; events are dropped. It is safe for concurrent use.
type cdp struct {
	w io.Writer

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan cdpMessage
	readErr error
	done    chan struct{} // closed when the reader stops
}

type cdpMessage struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func newCDP(w io.Writer, r io.Reader) *cdp {
	c := &cdp{w: w, waiting: map[int]chan cdpMessage{}, done: make(chan struct{})}
	go c.read(r)
	return c
}

// read dispatches answers until r fails (Chromium exited or the pipe was
// closed).
func (c *cdp) read(r io.Reader) {
	br := bufio.NewReaderSize(r, 1<<20)
	var err error
	for {
		var msg []byte
		msg, err = br.ReadBytes(0)
		if err != nil {
			break
		}
		var m cdpMessage
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue // an event
		}
		c.mu.Lock()
		ch := c.waiting[m.ID]
		delete(c.waiting, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m // buffered
		}
	}
	c.mu.Lock()
	c.readErr = err
	c.mu.Unlock()
	close(c.done)
}

// call sends one command (in session, or to the browser when session is
// "") and waits for its answer.
func (c *cdp) call(ctx context.Context, session, method string, params any) (json.RawMessage, error) {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan cdpMessage, 1)
	c.waiting[id] = ch
	c.mu.Unlock()
	req := map[string]any{"id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	if session != "" {
		req["sessionId"] = session
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", method, err)
	}
	if _, err := c.w.Write(append(b, 0)); err != nil {
		return nil, fmt.Errorf("send %s to chromium: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return nil, fmt.Errorf("chromium %s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		return m.Result, nil
	case <-c.done:
		c.mu.Lock()
		err := c.readErr
		c.mu.Unlock()
		return nil, fmt.Errorf("chromium %s: connection closed: %w", method, err)
	case <-ctx.Done():
		return nil, fmt.Errorf("chromium %s: %w", method, ctx.Err())
	}
}

// callInto is call, decoding the answer into out.
func (c *cdp) callInto(ctx context.Context, session, method string, params, out any) error {
	res, err := c.call(ctx, session, method, params)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(res, out); err != nil {
		return fmt.Errorf("decode the answer to %s: %w", method, err)
	}
	return nil
}
