// Package logging builds poolwatch's go-kit logger from the --log.level and
// --log.format flags, and bridges it to the *slog.Logger that
// exporter-toolkit takes. Every line has one timestamp key, ts, in both
// formats: the bridge drops slog's own time and lets the go-kit logger
// stamp the line, as it stamps poolwatch's own.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	sloggokit "github.com/tjhop/slog-gokit"
)

// Levels and formats accepted by New, as listed in errors and --help.
const (
	Levels  = "debug, info, warn, error"
	Formats = "logfmt, json"
)

// Logger is the configured logger and its bridge.
type Logger struct {
	// Base is the filtered logger without timestamp or caller.
	Base log.Logger
	// Log is Base with ts and caller: what the program logs with.
	Log log.Logger
	// Level is the configured level.
	Level string
}

// New returns a logger writing to w in the given format ("logfmt" or
// "json"), dropping records below lvl ("debug", "info", "warn", "error").
func New(w io.Writer, lvl, format string) (*Logger, error) {
	var l log.Logger
	switch format {
	case "logfmt":
		l = log.NewLogfmtLogger(log.NewSyncWriter(w))
	case "json":
		l = log.NewJSONLogger(log.NewSyncWriter(w))
	default:
		return nil, fmt.Errorf("unknown log format %q: want one of %s", format, Formats)
	}
	var opt level.Option
	switch lvl {
	case "debug":
		opt = level.AllowDebug()
	case "info":
		opt = level.AllowInfo()
	case "warn":
		opt = level.AllowWarn()
	case "error":
		opt = level.AllowError()
	default:
		return nil, fmt.Errorf("unknown log level %q: want one of %s", lvl, Levels)
	}
	// The level filter comes before caller, or every caller reads level.go.
	base := level.NewFilter(l, opt)
	return &Logger{
		Base:  base,
		Log:   log.With(base, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller),
		Level: lvl,
	}, nil
}

// Slog bridges the logger to a *slog.Logger for exporter-toolkit. Only that
// boundary uses it.
func (l *Logger) Slog() *slog.Logger {
	var sl slog.Level
	switch l.Level {
	case "debug":
		sl = slog.LevelDebug
	case "warn":
		sl = slog.LevelWarn
	case "error":
		sl = slog.LevelError
	default:
		sl = slog.LevelInfo
	}
	// The bridge adds the caller from slog's record; the timestamp comes
	// from the go-kit logger, under the same key as poolwatch's own lines.
	stamped := log.With(l.Base, "ts", log.DefaultTimestampUTC)
	return slog.New(untimed{sloggokit.NewGoKitHandler(stamped, sl)})
}

// untimed passes records on without their time, so that the bridge writes
// no time key of its own beside the go-kit logger's ts.
type untimed struct{ slog.Handler }

func (u untimed) Handle(ctx context.Context, r slog.Record) error {
	r.Time = time.Time{}
	return u.Handler.Handle(ctx, r)
}

func (u untimed) WithAttrs(attrs []slog.Attr) slog.Handler {
	return untimed{u.Handler.WithAttrs(attrs)}
}

func (u untimed) WithGroup(name string) slog.Handler { return untimed{u.Handler.WithGroup(name)} }
