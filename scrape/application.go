package scrape

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/version"

	"github.com/poolwatch/poolwatch/config"
)

// acceptHeader asks for the Prometheus text format first: expfmt's parser
// is made for it. OpenMetrics 1.0 is read by the same parser (as expfmt's
// own decoder does); JSON is poolwatch's status document.
const acceptHeader = "text/plain;version=0.0.4;q=1,application/json;q=0.9," +
	"application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"

// newApplication returns the SelfContained scraper of an application
// target: one GET of t.URL per round with the HTTP client of t.HTTPClient,
// the response limited to t.BodySizeLimit, read as t.Format. Of t it also
// uses the name and labels, PoolLabel and MaxPools.
func newApplication(t config.Target) (*application, error) {
	client, err := promconfig.NewClientFromConfig(t.HTTPClient, "poolwatch_"+t.Name,
		promconfig.WithUserAgent(version.ComponentUserAgent("poolwatch")))
	if err != nil {
		return nil, fmt.Errorf("target %q: http_client: %w", t.Name, err)
	}
	closed, closeFn := context.WithCancelCause(context.Background())
	return &application{
		cfg: t, client: client, where: fmt.Sprintf("target %q (%s)", t.Name, t.RedactedURL()),
		closed: closed, closeFn: closeFn,
	}, nil
}

// application scrapes one application target. It is safe for concurrent
// use: the HTTP client is.
type application struct {
	cfg    config.Target
	client *http.Client
	// where names the target and its redacted URL in errors.
	where string
	// closed is cancelled by Close.
	closed  context.Context
	closeFn context.CancelCauseFunc
}

// errClosed cancels the requests of a closed scraper.
var errClosed = errors.New("target removed or changed by a reload")

// Close cancels the requests in flight (their rounds fail at once) and
// closes the client's idle connections. A later Scrape fails at once.
func (s *application) Close() {
	s.closeFn(errClosed)
	s.client.CloseIdleConnections()
}

// Scrape runs one round: the request, bounded by ctx, and the mapping of
// the response into pools. A failure of the request, a status other than
// 200 or a response over the size limit is recorded under QueryHTTP; a
// response that does not parse, or in which no pool can be found, under
// QueryParse. The Querier is not used.
func (s *application) Scrape(ctx context.Context, _ Querier) *Result {
	res := newResult(config.KindApplication, &s.cfg)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(s.closed, func() { cancel(context.Cause(s.closed)) })
	defer stop()
	pools, query, err := s.fetch(ctx)
	if err != nil && ctx.Err() != nil && context.Cause(ctx) == errClosed { //nolint:errorlint // the sentinel itself
		err = errClosed
	}
	if err != nil {
		res.Errors = append(res.Errors, QueryError{Query: query, Err: fmt.Errorf("%s: %w", s.where, err)})
		return res
	}
	for i := range pools {
		pools[i].NoLeakDetection = true
	}
	res.Pools, res.PoolsDropped = capPools(pools, &s.cfg, "")
	return res
}

// ErrTooLarge is wrapped by the error of a response larger than the
// target's body_size_limit.
var ErrTooLarge = errors.New("response too large")

// fetch requests the URL and maps the response. It returns the pools, or
// the query name of the step that failed and its error.
func (s *application) fetch(ctx context.Context) ([]Pool, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.URL, nil)
	if err != nil {
		return nil, QueryHTTP, fmt.Errorf("build request: %s", redactedURLError(err))
	}
	req.Header.Set("Accept", acceptHeader)
	// prometheus/common's transport does not decompress: as Prometheus
	// does, ask for gzip and decompress here, under the size limit.
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.FormatFloat(s.cfg.ScrapeTimeout.Seconds(), 'f', -1, 64))
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, QueryHTTP, fmt.Errorf("GET: %s", redactedURLError(err))
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, QueryHTTP, fmt.Errorf("GET: HTTP status %s", resp.Status)
	}
	limit := int64(s.cfg.BodySizeLimit)
	if limit <= 0 {
		limit = DefaultBodySizeLimit
	}
	if resp.ContentLength > limit {
		return nil, QueryHTTP, fmt.Errorf("%w: Content-Length %d bytes is over body_size_limit %s, refused unread", ErrTooLarge, resp.ContentLength, config.ByteSize(limit))
	}
	var raw io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return nil, QueryHTTP, fmt.Errorf("read gzip response: %w", err)
		}
		defer func() { _ = zr.Close() }()
		raw = zr
	}
	body := &limitedReader{r: raw, left: limit}
	br := bufio.NewReader(body)
	format, err := detectFormat(s.cfg.Format, resp.Header.Get("Content-Type"), br)
	var pools []Pool
	if err == nil {
		switch format {
		case config.FormatJSON:
			pools, err = mapStatusJSON(br)
		default:
			pools, err = mapExposition(br, resp.Header.Get("Content-Type"), s.cfg.PoolLabel)
		}
	}
	switch {
	case body.exceeded:
		return nil, QueryHTTP, fmt.Errorf("%w: over body_size_limit %s, refused", ErrTooLarge, config.ByteSize(limit))
	case body.readErr != nil:
		return nil, QueryHTTP, fmt.Errorf("read response: %w", body.readErr)
	case err != nil:
		return nil, QueryParse, err
	}
	return pools, "", nil
}

// DefaultBodySizeLimit applies when a target's BodySizeLimit is 0 (built
// in tests, not loaded).
const DefaultBodySizeLimit = 10 << 20

// detectFormat returns the format of a response: the configured one, or for
// FormatAuto, JSON when the Content-Type says so or, without a telling
// Content-Type, when the first byte that is not white space is '{'.
func detectFormat(configured config.Format, contentType string, br *bufio.Reader) (config.Format, error) {
	if configured == config.FormatJSON || configured == config.FormatPrometheus {
		return configured, nil
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return config.FormatJSON, nil
	case mt == "text/plain" || mt == "application/openmetrics-text":
		return config.FormatPrometheus, nil
	}
	for {
		b, err := br.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", errors.New("empty response")
			}
			return "", err
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			_, _ = br.ReadByte()
			continue
		case '{':
			return config.FormatJSON, nil
		}
		return config.FormatPrometheus, nil
	}
}

// limitedReader reads at most left bytes of r: reading past them fails, and
// exceeded is set. A read error of r is kept in readErr.
type limitedReader struct {
	r        io.Reader
	left     int64
	exceeded bool
	readErr  error
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.exceeded {
		return 0, ErrTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if int64(n) > l.left {
		l.exceeded = true
		return int(l.left), ErrTooLarge
	}
	l.left -= int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		l.readErr = err
	}
	return n, err
}

// redactedURLError words an HTTP client error without the URL it carries
// (url.Error quotes it, query string included).
func redactedURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
