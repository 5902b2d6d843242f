package launch

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// AlertmanagerOptions configure an Alertmanager started by
// StartAlertmanager.
type AlertmanagerOptions struct {
	// Dir holds alertmanager.yml, the storage (Dir/data) and the logs. It
	// must exist.
	Dir string
	// Config is written to Dir/alertmanager.yml (see AlertmanagerConfig).
	Config string
	ProcessOptions
}

// StartAlertmanager runs Alertmanager with opts.Config on a free loopback
// port, clustering off (--cluster.listen-address= empty: no gossip on
// 0.0.0.0:9094), and returns once /-/ready answers 200 (see StartDaemon).
func StartAlertmanager(ctx context.Context, opts AlertmanagerOptions) (*Daemon, error) {
	return alertmanagerDaemon(opts).start(ctx)
}

func alertmanagerDaemon(opts AlertmanagerOptions) configuredDaemon {
	return configuredDaemon{
		name: "alertmanager", dir: opts.Dir, file: "alertmanager.yml", config: opts.Config, po: opts.ProcessOptions,
		args: func(cfg, addr string) []string {
			return []string{
				"--config.file=" + cfg,
				"--storage.path=" + filepath.Join(opts.Dir, "data"),
				"--web.listen-address=" + addr,
				"--cluster.listen-address=", // no HA gossip on 0.0.0.0:9094
			}
		},
	}
}

// AlertmanagerConfig returns an alertmanager.yml that routes every alert,
// grouped by groupBy, to one webhook receiver named receiver at url,
// resolutions included. A change goes out after a second (group_wait and
// group_interval 1s); an unchanged group is repeated after 4 h.
func AlertmanagerConfig(receiver, url string, groupBy ...string) string {
	return fmt.Sprintf(`route:
  receiver: %s
  group_by: [%s]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: %s
    webhook_configs:
      - url: '%s'
        send_resolved: true
`, receiver, strings.Join(groupBy, ", "), receiver, url)
}
