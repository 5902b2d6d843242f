package agent

import (
	"sync"
	"sync/atomic"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/poolwatch/poolwatch/config"
)

// Reloader loads the configuration file into an Agent through one
// serialized path, as Prometheus' own components do: SIGHUP and
// POST /-/reload both call Reload.
type Reloader struct {
	path   string
	agent  *Agent
	logger log.Logger

	mu sync.Mutex // serializes Reload
	// loaded is true once a configuration has been applied.
	loaded atomic.Bool

	success   prometheus.Gauge
	timestamp prometheus.Gauge
}

// NewReloader returns a reloader of the file at path into a. Its two
// metrics are registered with reg.
func NewReloader(path string, a *Agent, reg prometheus.Registerer, logger log.Logger) *Reloader {
	r := &Reloader{
		path:   path,
		agent:  a,
		logger: logger,
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "poolwatch_config_last_reload_successful",
			Help: "Whether the last configuration reload attempt was successful.",
		}),
		timestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "poolwatch_config_last_reload_success_timestamp_seconds",
			Help: "Timestamp of the last successful configuration reload.",
		}),
	}
	reg.MustRegister(r.success, r.timestamp)
	return r
}

// Reload reads and validates the file and applies it. A bad file is
// rejected and the configuration in force stays; the failure is logged.
// Before any configuration is in force (the first load, at start-up), a
// failure is only returned: there is no previous configuration to keep, and
// the caller reports it. Reload blocks while another reload runs.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg, err := config.Load(r.path)
	if err == nil {
		err = r.agent.Apply(cfg)
	}
	if err != nil {
		r.success.Set(0)
		if r.loaded.Load() {
			level.Error(r.logger).Log("msg", "config reload failed, keeping the previous configuration", "err", err)
		}
		return err
	}
	r.loaded.Store(true)
	r.success.Set(1)
	r.timestamp.SetToCurrentTime()
	level.Info(r.logger).Log("msg", "config loaded", "file", r.path, "targets", len(cfg.Targets()))
	return nil
}

// Loaded reports whether a configuration has been applied.
func (r *Reloader) Loaded() bool { return r.loaded.Load() }
