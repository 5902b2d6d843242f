package testenv

import (
	"context"
	"testing"

	"github.com/poolwatch/poolwatch/internal/launch"
)

// The types of internal/launch under the names the tests know them by.
type (
	// Daemon is launch.Daemon.
	Daemon = launch.Daemon
	// DaemonOptions is launch.DaemonOptions.
	DaemonOptions = launch.DaemonOptions
	// ProcessOptions is launch.ProcessOptions.
	ProcessOptions = launch.ProcessOptions
	// PrometheusOptions is launch.PrometheusOptions.
	PrometheusOptions = launch.PrometheusOptions
	// AlertmanagerOptions is launch.AlertmanagerOptions.
	AlertmanagerOptions = launch.AlertmanagerOptions
	// WebhookReceiver is launch.WebhookReceiver.
	WebhookReceiver = launch.WebhookReceiver
	// WebhookAlert is launch.WebhookAlert.
	WebhookAlert = launch.WebhookAlert
	// WebhookNotification is launch.WebhookNotification.
	WebhookNotification = launch.WebhookNotification
	// AlertEvent is launch.AlertEvent.
	AlertEvent = launch.AlertEvent
	// PromAPI is launch.PromAPI.
	PromAPI = launch.PromAPI
	// QueryResult is launch.QueryResult.
	QueryResult = launch.QueryResult
	// Sample is launch.Sample.
	Sample = launch.Sample
)

// StartDaemon starts a daemon for tb (see launch.StartDaemon). A cleanup
// stops it, failing the test if it needed SIGKILL, and prints its log's
// tail if the test failed. It fails the test when the daemon does not come
// up.
func StartDaemon(tb testing.TB, opts DaemonOptions) *Daemon {
	tb.Helper()
	return daemonFor(tb, opts.Name, func(ctx context.Context) (*Daemon, error) { return launch.StartDaemon(ctx, opts) })
}

// StartPrometheus runs Prometheus for tb (see launch.StartPrometheus);
// cleanup and failures are StartDaemon's. Talk to it with
// PromAPI{URL: d.URL}.
func StartPrometheus(tb testing.TB, opts PrometheusOptions) *Daemon {
	tb.Helper()
	Require(tb, "prometheus")
	return daemonFor(tb, "prometheus", func(ctx context.Context) (*Daemon, error) { return launch.StartPrometheus(ctx, opts) })
}

// StartAlertmanager runs Alertmanager for tb (see launch.StartAlertmanager);
// cleanup and failures are StartDaemon's.
func StartAlertmanager(tb testing.TB, opts AlertmanagerOptions) *Daemon {
	tb.Helper()
	Require(tb, "alertmanager")
	return daemonFor(tb, "alertmanager", func(ctx context.Context) (*Daemon, error) { return launch.StartAlertmanager(ctx, opts) })
}

func daemonFor(tb testing.TB, name string, start func(context.Context) (*Daemon, error)) *Daemon {
	tb.Helper()
	d, err := start(context.Background())
	if err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("stop %s: %v", d.Name, err)
		}
		if tb.Failed() {
			tb.Logf("%s log (%s), last lines:\n%s", d.Name, d.LogPath, d.LogTail(40))
		}
	})
	return d
}

// StartWebhookReceiver serves a launch.WebhookReceiver until tb's cleanup.
func StartWebhookReceiver(tb testing.TB) *WebhookReceiver {
	tb.Helper()
	r, err := launch.StartWebhookReceiver(nil)
	if err != nil {
		tb.Fatalf("start the webhook receiver: %v", err)
	}
	closeOnCleanup(tb, "the webhook receiver", r)
	return r
}
