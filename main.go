// Command poolwatch is a Prometheus exporter that watches database
// connection pools (PgBouncer pools, PostgreSQL connection slots and
// application pools) and pages before a pool runs dry.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/poolwatch/poolwatch/agent"
	"github.com/poolwatch/poolwatch/config"
	"github.com/poolwatch/poolwatch/internal/logging"
	"github.com/poolwatch/poolwatch/server"
)

// cli is the command line. Flags follow Prometheus' dotted kebab-case.
type cli struct {
	ConfigFile string `name:"config.file" default:"poolwatch.yml" env:"POOLWATCH_CONFIG_FILE" help:"Path to the configuration file."`
	LogLevel   string `name:"log.level" default:"info" enum:"debug,info,warn,error" env:"POOLWATCH_LOG_LEVEL" help:"Only log messages with the given severity or above: one of ${enum}."`
	LogFormat  string `name:"log.format" default:"logfmt" enum:"logfmt,json" env:"POOLWATCH_LOG_FORMAT" help:"Output format of log messages: one of ${enum}."`

	Version kong.VersionFlag `name:"version" help:"Print version information and exit."`

	// The run flags are the application's own, not the run command's, so
	// that `poolwatch --help` lists them: run is the default command, and
	// kong's help for the application shows only the application's flags.
	runFlags `embed:""`

	Run         runCmd         `cmd:"" default:"withargs" help:"Run the exporter (the default command)."`
	CheckConfig checkConfigCmd `cmd:"" name:"check-config" help:"Validate the configuration file and exit."`
}

// runFlags configure the exporter that the run command starts.
type runFlags struct {
	ListenAddress   []string      `name:"web.listen-address" default:":9648" env:"POOLWATCH_WEB_LISTEN_ADDRESS" help:"Addresses to listen on for the web interface and telemetry; repeat for several."`
	WebConfigFile   string        `name:"web.config.file" env:"POOLWATCH_WEB_CONFIG_FILE" help:"Path to an exporter-toolkit web configuration file that enables TLS or basic authentication."`
	SystemdSocket   bool          `name:"web.systemd-socket" help:"Use systemd socket activation listeners instead of port listeners (Linux only)."`
	TelemetryPath   string        `name:"web.telemetry-path" default:"/metrics" env:"POOLWATCH_WEB_TELEMETRY_PATH" help:"Path under which to expose metrics."`
	TimeoutOffset   time.Duration `name:"scrape.timeout-offset" default:"500ms" env:"POOLWATCH_SCRAPE_TIMEOUT_OFFSET" help:"Subtracted from Prometheus' scrape timeout to leave time to answer."`
	MetricsTargets  bool          `name:"metrics.targets" default:"true" negatable:"" env:"POOLWATCH_METRICS_TARGETS" help:"Put every target's series on the metrics path (default: true); --no-metrics.targets leaves them to /probe."`
	ShutdownTimeout time.Duration `name:"web.shutdown-timeout" default:"10s" help:"How long a graceful shutdown waits for requests and probe pools."`
	EnableLifecycle bool          `name:"web.enable-lifecycle" env:"POOLWATCH_WEB_ENABLE_LIFECYCLE" help:"Enable configuration reload over HTTP (POST /-/reload). SIGHUP always reloads."`
	IdleTimeout     time.Duration `name:"web.idle-timeout" default:"1m" env:"POOLWATCH_WEB_IDLE_TIMEOUT" help:"Close a keep-alive HTTP connection idle this long (at most 2m)."`
	MaxConnections  int           `name:"web.max-connections" default:"512" env:"POOLWATCH_WEB_MAX_CONNECTIONS" help:"Serve at most this many HTTP connections at once per listen address; more wait to be accepted. Lowered to half the open-files limit if that is less."`
}

// runCmd runs the exporter with the application's run flags.
type runCmd struct{}

type checkConfigCmd struct{}

func main() {
	var c cli
	ctx := kong.Parse(&c,
		kong.Name("poolwatch"),
		kong.Description("Prometheus exporter that watches database connection pools and pages before a pool runs dry."),
		kong.Vars{"version": version.Print("poolwatch")},
		kong.UsageOnError(),
	)
	logger, err := logging.New(os.Stderr, c.LogLevel, c.LogFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "poolwatch:", err)
		os.Exit(2)
	}
	os.Exit(exitCode(ctx.Run(&c, logger), logger))
}

// exitCode reports a command's error and returns the process's exit code:
// 0 without error; 1 otherwise, after printing a plainError on stderr as it
// is, or logging any other error.
func exitCode(err error, lg *logging.Logger) int {
	if err == nil {
		return 0
	}
	var plain plainError
	if errors.As(err, &plain) {
		fmt.Fprintln(os.Stderr, plain.err)
		return 1
	}
	level.Error(lg.Log).Log("msg", "poolwatch stopped on an error", "err", err)
	return 1
}

// plainError is an error that is the command's whole output: main prints it
// on stderr as it is, one line, with no log prefix.
type plainError struct{ err error }

func (e plainError) Error() string { return e.err.Error() }
func (e plainError) Unwrap() error { return e.err }

// Run validates the configuration file and reports the result on stdout,
// or returns the loader's one-line error.
func (checkConfigCmd) Run(c *cli, _ *logging.Logger) error {
	cfg, err := config.Load(c.ConfigFile)
	if err != nil {
		return plainError{err}
	}
	fmt.Printf("%s: OK, %d targets\n", c.ConfigFile, len(cfg.Targets()))
	return nil
}

// Run serves until SIGTERM or SIGINT. It returns an error when the
// configuration cannot be loaded at start-up or the web server fails.
func (runCmd) Run(c *cli, lg *logging.Logger) error {
	r := &c.runFlags
	logger := lg.Log
	limits := server.HTTPLimits{IdleTimeout: r.IdleTimeout, MaxConnections: r.MaxConnections}
	if err := limits.Validate(); err != nil {
		return err
	}
	level.Info(logger).Log("msg", "starting poolwatch", "version", version.Info(), "build_context", version.BuildContext())

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		versioncollector.NewCollector("poolwatch"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	a := agent.New(logger, r.ShutdownTimeout)
	reloader := agent.NewReloader(c.ConfigFile, a, reg, logger)
	if err := reloader.Reload(); err != nil {
		return fmt.Errorf("the configuration could not be loaded at start-up: %w", err)
	}

	handler, err := server.New(server.Options{
		Agent:               a,
		Gatherer:            reg,
		TelemetryPath:       r.TelemetryPath,
		ScrapeTimeoutOffset: r.TimeoutOffset,
		MetricsTargets:      r.MetricsTargets,
		Reload:              reloader.Reload,
		EnableLifecycle:     r.EnableLifecycle,
		Ready:               reloader.Loaded,
		Logger:              logger,
		Version:             version.Version,
	})
	if err != nil {
		return err
	}
	srv := server.NewHTTPServer(handler, limits, a.LongestScrapeTimeout)
	flags := &web.FlagConfig{WebListenAddresses: &r.ListenAddress, WebSystemdSocket: &r.SystemdSocket, WebConfigFile: &r.WebConfigFile}
	maxConns, lowered := server.EffectiveMaxConnections(limits.MaxConnections)
	if lowered {
		level.Warn(logger).Log("msg", "HTTP connection limit lowered to half the open-files limit", "web_max_connections", limits.MaxConnections, "limit", maxConns)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- server.ListenAndServe(srv, flags, maxConns, lg.Slog()) }()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(term)
	for {
		select {
		case <-hup:
			_ = reloader.Reload() // logged; the old configuration stays on failure
		case err := <-serveErr:
			closeCtx, cancel := context.WithTimeout(context.Background(), r.ShutdownTimeout)
			if cerr := a.Close(closeCtx); cerr != nil {
				level.Warn(logger).Log("msg", "probe pools closed with cancelled queries", "err", cerr)
			}
			cancel()
			return fmt.Errorf("web server: %w", err)
		case sig := <-term:
			level.Info(logger).Log("msg", "shutting down", "signal", sig.String())
			shutdownCtx, cancel := context.WithTimeout(context.Background(), r.ShutdownTimeout)
			if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				level.Warn(logger).Log("msg", "graceful HTTP shutdown incomplete", "err", err)
			}
			if err := a.Close(shutdownCtx); err != nil {
				level.Warn(logger).Log("msg", "probe pools closed with cancelled queries", "err", err)
			}
			cancel()
			level.Info(logger).Log("msg", "stopped")
			return nil
		}
	}
}
