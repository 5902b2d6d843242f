package sharding

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/poolwatch/poolwatch/internal/testenv"
)

const (
	// promReadyBudget bounds one start of Prometheus, up to /-/ready = 200.
	promReadyBudget = 30 * time.Second
	// promStopGrace is how long Prometheus gets after SIGTERM.
	promStopGrace = 15 * time.Second
	// promStartAttempts: the free port can be taken before Prometheus binds
	// it; a start failing with "address already in use" is retried.
	promStartAttempts = 3
	// httpTimeout bounds one HTTP request of the test.
	httpTimeout = 10 * time.Second
)

// prometheus is a Prometheus server started by startPrometheus.
type prometheus struct {
	URL     string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error // valid once done is closed
}

// startPrometheus runs Prometheus with dir/prometheus.yml (relative paths in
// it, such as file_sd files, resolve against dir), its TSDB under dir, on a
// free loopback port. It waits for /-/ready and registers a cleanup that
// stops it (SIGTERM, then SIGKILL, which fails the test) and prints its log
// tail if the test failed.
func startPrometheus(t *testing.T, dir string) *prometheus {
	t.Helper()
	bin, err := testenv.LookPath("prometheus")
	if err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	var lastErr error
	for attempt := 1; attempt <= promStartAttempts; attempt++ {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		p := &prometheus{URL: "http://" + addr, logPath: filepath.Join(dir, fmt.Sprintf("prometheus-%d.log", attempt)), done: make(chan struct{})}
		if err := p.launch(bin, dir, addr); err != nil {
			t.Fatalf("start prometheus: %v", err)
		}
		t.Cleanup(func() {
			p.stop(t)
			if t.Failed() {
				t.Logf("prometheus log (%s), last lines:\n%s", p.logPath, p.logTail(40))
			}
		})
		if lastErr = p.waitReady(); lastErr == nil {
			return p
		}
		p.stop(t)
		if !strings.Contains(p.logTail(40), "address already in use") {
			break
		}
	}
	t.Fatalf("start prometheus: %v", lastErr)
	return nil
}

func (p *prometheus) launch(bin, dir, addr string) error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // a path in the test's temp dir
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer func() { _ = logf.Close() }() // the child has its own descriptor
	p.cmd = exec.Command(bin,           //nolint:gosec // bin from testenv.LookPath, arguments from this test
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=info",
	)
	p.cmd.Dir = dir
	p.cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + dir, "LC_ALL=C", "TZ=UTC"}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	return nil
}

func (p *prometheus) waitReady() error {
	deadline := time.Now().Add(promReadyBudget)
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("prometheus exited during startup (%w); log:\n%s", p.waitErr, p.logTail(30))
		default:
		}
		resp, err := client.Get(p.URL + "/-/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/-/ready answered %s", resp.Status)
		}
		last = err
		if !time.Now().Before(deadline) {
			return fmt.Errorf("prometheus not ready within %v (last: %w); log:\n%s", promReadyBudget, last, p.logTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop is idempotent; a Prometheus that needs SIGKILL fails the test.
func (p *prometheus) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("signal prometheus: %v", err)
	}
	timer := time.NewTimer(promStopGrace)
	defer timer.Stop()
	select {
	case <-p.done:
		return
	case <-timer.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	t.Errorf("prometheus did not exit within %v of SIGTERM and was killed", promStopGrace)
}

func (p *prometheus) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(string(bytes.TrimRight(b, "\n")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\t" + strings.Join(lines, "\n\t")
}

// sample is one element of an instant vector.
type sample struct {
	Metric map[string]string
	Value  float64
}

// query runs an instant PromQL query and returns its vector.
func (p *prometheus) query(q string) ([]sample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := p.api("/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %q, want vector", q, data.ResultType)
	}
	out := make([]sample, 0, len(data.Result))
	for _, r := range data.Result {
		s, ok := r.Value[1].(string)
		if !ok {
			return nil, fmt.Errorf("query %q: value %v is not a string", q, r.Value[1])
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: value %q: %w", q, s, err)
		}
		out = append(out, sample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// scrapeTarget is one entry of /api/v1/targets.
type scrapeTarget struct {
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	Labels           map[string]string `json:"labels"`
	ScrapePool       string            `json:"scrapePool"`
	ScrapeURL        string            `json:"scrapeUrl"`
	Health           string            `json:"health"`
	LastError        string            `json:"lastError"`
}

// targets returns Prometheus' active and dropped targets.
func (p *prometheus) targets() (active, dropped []scrapeTarget, err error) {
	var data struct {
		Active  []scrapeTarget `json:"activeTargets"`
		Dropped []scrapeTarget `json:"droppedTargets"`
	}
	if err := p.api("/api/v1/targets?state=any", &data); err != nil {
		return nil, nil, err
	}
	return data.Active, data.Dropped, nil
}

// api GETs an HTTP API path and decodes its "data" into out.
func (p *prometheus) api(path string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path, nil)
	if err != nil {
		return fmt.Errorf("request %s: %w", path, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("GET %s: %s: decode: %w", path, resp.Status, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, env.Error)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return fmt.Errorf("GET %s: decode data: %w", path, err)
	}
	return nil
}
