package config

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/stretchr/testify/require"
)

// secretMarker is part of every password used by the tests (in DSNs,
// password files and environment variables). No error may contain it.
const secretMarker = "s3cret"

// testEnvPassword is the value of the password environment variables the
// testdata uses.
const testEnvPassword = "S3cret-from-env" //nolint:gosec // a test password

// hermeticEnv clears the PG* variables that pgx reads while parsing a DSN and
// sets the password variables the testdata refers to.
func hermeticEnv(tb testing.TB) {
	tb.Helper()
	for _, k := range []string{
		"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGAPPNAME",
		"PGCONNECT_TIMEOUT", "PGSSLMODE", "PGSSLKEY", "PGSSLCERT", "PGSSLSNI", "PGSSLROOTCERT",
		"PGSSLPASSWORD", "PGSSLNEGOTIATION", "PGSSLCERTMODE", "PGTARGETSESSIONATTRS", "PGSERVICE",
		"PGSERVICEFILE", "PGTZ", "PGOPTIONS", "PGMINPROTOCOLVERSION", "PGMAXPROTOCOLVERSION",
		"PGCHANNELBINDING", "PGREQUIREAUTH", "POOLWATCH_TEST_UNSET_PASSWORD",
	} {
		tb.Setenv(k, "") // registers the restore
		require.NoError(tb, os.Unsetenv(k))
	}
	tb.Setenv("POOLWATCH_TEST_PASSWORD", testEnvPassword)
	tb.Setenv("POOLWATCH_TEST_BOUNCER_PASSWORD", testEnvPassword)
	tb.Setenv("ORDERS_DB_PASSWORD", testEnvPassword)
}

// requireNoSecret fails if msg contains any test password.
func requireNoSecret(tb testing.TB, msg string) {
	tb.Helper()
	require.NotContains(tb, strings.ToLower(msg), secretMarker, "a password leaked into an error")
}

func intPtr(v int) *int { return &v }

// badConfigs maps each file in testdata/bad to the exact error it must give.
func badConfigs() map[string]string {
	return map[string]string{ //nolint:gosec // test fixtures, no credentials
		"auth-module-bad-name.yml":                  `testdata/bad/auth-module-bad-name.yml:2: auth_modules["mon itoring"]: invalid auth module name "mon itoring": use only letters, digits and _ . : -`,
		"auth-module-bad-sslmode.yml":               `testdata/bad/auth-module-bad-sslmode.yml:4: auth_modules.monitoring.sslmode: invalid connection string: failed to configure TLS (sslmode is invalid)`,
		"auth-module-bad-type.yml":                  `testdata/bad/auth-module-bad-type.yml:3: auth_modules.monitoring.type: unsupported auth module type "kerberos": only userpass (postgres_exporter's) is supported`,
		"auth-module-missing-user.yml":              `testdata/bad/auth-module-missing-user.yml:3: auth_modules.monitoring.user: missing required key`,
		"auth-module-option-managed.yml":            `testdata/bad/auth-module-option-managed.yml:5: auth_modules.monitoring.options.host: host cannot be set under options: use the address in /probe?target=`,
		"auth-module-option-require-auth.yml":       `testdata/bad/auth-module-option-require-auth.yml:5: auth_modules.monitoring.options.require_auth: require_auth cannot be set under options: use insecure_password_auth`,
		"auth-module-password-file-empty.yml":       `testdata/bad/auth-module-password-file-empty.yml:4: auth_modules.monitoring.password_file: password file testdata/bad/secrets/empty is empty`,
		"auth-module-sslmode-twice.yml":             `testdata/bad/auth-module-sslmode-twice.yml:6: auth_modules.monitoring.options.sslmode: sslmode is set twice (sslmode and options.sslmode): keep one`,
		"auth-module-tls-with-sslmode-disable.yml":  `testdata/bad/auth-module-tls-with-sslmode-disable.yml:6: auth_modules.monitoring.tls.ca_file: tls.ca_file is set but sslmode=disable never uses TLS`,
		"auth-module-two-passwords.yml":             `testdata/bad/auth-module-two-passwords.yml:7: auth_modules.monitoring.password_file: more than one password source (userpass.password and password_file): keep one`,
		"auth-module-two-users.yml":                 `testdata/bad/auth-module-two-users.yml:6: auth_modules.monitoring.userpass: the user is given twice (user and userpass.username): keep one`,
		"auth-module-unknown-key.yml":               `testdata/bad/auth-module-unknown-key.yml:4: auth_modules.monitoring.sslrootcert: unknown key; valid keys here: user, password_file, password_env, sslmode, tls, insecure_password_auth, options, type, userpass`,
		"probe-allowed-target-empty.yml":            `testdata/bad/probe-allowed-target-empty.yml:4: probe.allowed_targets[1]: must not be empty`,
		"probe-allowed-target-not-host-port.yml":    `testdata/bad/probe-allowed-target-not-host-port.yml:2: probe.allowed_targets[0]: "db-*.internal" is not a host:port pattern: write the host and the port, each with * and ? as wildcards, e.g. "db-*.internal:5432" or "[::1]:*"`,
		"probe-allowed-targets-not-list.yml":        `testdata/bad/probe-allowed-targets-not-list.yml:2: probe.allowed_targets: must be a list, not a scalar`,
		"probe-max-targets-zero.yml":                `testdata/bad/probe-max-targets-zero.yml:3: probe.max_targets: must be at least 1, got 0`,
		"no-targets-probe-without-auth-modules.yml": `testdata/bad/no-targets-probe-without-auth-modules.yml:3: targets: at least one target is required, unless auth_modules and probe.allowed_targets are both set for probes by address`,
		"app-pool-duplicate-name.yml":               `testdata/bad/app-pool-duplicate-name.yml:8: targets[0].application_pools[1].name: duplicate application pool name "api" (first defined at line 6)`,
		"app-pool-empty-application-name.yml":       `testdata/bad/app-pool-empty-application-name.yml:7: targets[0].application_pools[0].application_name: must not be empty: use "*" to match every application`,
		"app-pool-max-zero.yml":                     `testdata/bad/app-pool-max-zero.yml:8: targets[0].application_pools[0].max_connections: must be at least 1, got 0`,
		"app-pool-min-greater-than-max.yml":         `testdata/bad/app-pool-min-greater-than-max.yml:8: targets[0].application_pools[0].min_connections: 30 is greater than max_connections 20 (targets[0].application_pools[0].max_connections, line 9)`,
		"app-pool-missing-application-name.yml":     `testdata/bad/app-pool-missing-application-name.yml:6: targets[0].application_pools[0].application_name: missing required key`,
		"app-pool-missing-name.yml":                 `testdata/bad/app-pool-missing-name.yml:6: targets[0].application_pools[0].name: missing required key`,
		"app-pool-name-server.yml":                  `testdata/bad/app-pool-name-server.yml:6: targets[0].application_pools[0].name: "server" is reserved for the server's connection slots`,
		"application-pools-on-pgbouncer.yml":        `testdata/bad/application-pools-on-pgbouncer.yml:5: targets[0].application_pools: application_pools are for postgres targets only`,
		"bad-duration-no-unit.yml":                  `testdata/bad/bad-duration-no-unit.yml:5: targets[0].leak_threshold: invalid duration "300": use a number with a unit, such as 500ms, 5s, 2m or 1h30m`,
		"bad-duration.yml":                          `testdata/bad/bad-duration.yml:2: defaults.scrape_timeout: invalid duration "5 seconds": use a number with a unit, such as 500ms, 5s, 2m or 1h30m`,
		"comments-only.yml":                         `testdata/bad/comments-only.yml:1: (root): the file is empty`,
		"connect-timeout-exceeds-scrape.yml":        `testdata/bad/connect-timeout-exceeds-scrape.yml:4: defaults.probe_pool.connect_timeout: 3s is longer than scrape_timeout 2s (defaults.scrape_timeout, line 2)`,
		"dsn-empty.yml":                             `testdata/bad/dsn-empty.yml:4: targets[0].dsn: must not be empty`,
		"dsn-keyword-value-unterminated.yml":        `testdata/bad/dsn-keyword-value-unterminated.yml:4: targets[0].dsn: invalid DSN: failed to parse as keyword/value (unterminated quoted string in connection info string)`,
		"dsn-multiple-hosts.yml":                    `testdata/bad/dsn-multiple-hosts.yml:4: targets[0].dsn: the DSN lists 2 hosts: a target is one server, give each its own target`,
		"dsn-password-bad-escape.yml":               `testdata/bad/dsn-password-bad-escape.yml:4: targets[0].dsn: invalid DSN: failed to parse as URL (invalid percent-encoded token in password)`,
		"dsn-password-bad-port.yml":                 `testdata/bad/dsn-password-bad-port.yml:4: targets[0].dsn: invalid DSN: invalid port`,
		"dsn-password-kv-unterminated.yml":          `testdata/bad/dsn-password-kv-unterminated.yml:4: targets[0].dsn: invalid DSN: failed to parse as keyword/value (unterminated quoted string in connection info string)`,
		"dsn-password-multiple-hosts.yml":           `testdata/bad/dsn-password-multiple-hosts.yml:4: targets[0].dsn: the DSN lists 2 hosts: a target is one server, give each its own target`,
		"dsn-password-stray-slash.yml":              `testdata/bad/dsn-password-stray-slash.yml:4: targets[0].dsn: invalid DSN: invalid port`,
		"dsn-password-unknown-kind.yml":             `testdata/bad/dsn-password-unknown-kind.yml:3: targets[0].kind: unknown kind "postgress": use postgres, pgbouncer, pgpool, pgcat, odyssey or application`,
		"dsn-pool-key.yml":                          `testdata/bad/dsn-pool-key.yml:4: targets[0].dsn: the DSN sets pool_max_conns: pool settings belong under probe_pool`,
		"dsn-scheme.yml":                            `testdata/bad/dsn-scheme.yml:4: targets[0].dsn: unsupported DSN scheme "mysql": use postgres:// or postgresql://, or a keyword/value string`,
		"dsn-statement-timeout.yml":                 `testdata/bad/dsn-statement-timeout.yml:4: targets[0].dsn: the DSN sets statement_timeout: use probe_pool.statement_timeout`,
		"dsn-unparseable.yml":                       `testdata/bad/dsn-unparseable.yml:4: targets[0].dsn: invalid DSN: invalid port`,
		"duplicate-key.yml":                         `testdata/bad/duplicate-key.yml:5: targets[0].kind: duplicate key (first defined at line 3)`,
		"duplicate-target-name.yml":                 `testdata/bad/duplicate-target-name.yml:8: targets[2].name: duplicate target name "db1" (first defined at line 2)`,
		"empty-document.yml":                        `testdata/bad/empty-document.yml:1: (root): the file is empty`,
		"empty.yml":                                 `testdata/bad/empty.yml:1: (root): the file is empty`,
		"health-check-timeout-exceeds-scrape.yml":   `testdata/bad/health-check-timeout-exceeds-scrape.yml:7: targets[0].probe_pool.health_check_timeout: 1.5s is longer than scrape_timeout 1s (targets[0].scrape_timeout, line 5)`,
		"huge-size.yml":                             `testdata/bad/huge-size.yml:3: defaults.probe_pool.max_connections: must be at most 2147483647, got 3000000000`,
		"label-double-underscore.yml":               `testdata/bad/label-double-underscore.yml:3: defaults.labels.__tenant: label names starting with __ are reserved for internal use`,
		"label-invalid-name.yml":                    `testdata/bad/label-invalid-name.yml:6: targets[0].labels["cost-center"]: invalid label name "cost-center": use letters, digits and _, not starting with a digit`,
		"label-null-value.yml":                      `testdata/bad/label-null-value.yml:6: targets[0].labels.env: missing value`,
		"label-reserved-info.yml":                   `testdata/bad/label-reserved-info.yml:3: defaults.labels.version: label "version" is reserved: poolwatch or Prometheus sets it (reserved: target, pool, job, instance, kind, database, user, mode, query, version, state, list, cache, node, role, address, upstream, reason, refusal)`,
		"label-reserved.yml":                        `testdata/bad/label-reserved.yml:7: targets[0].labels.instance: label "instance" is reserved: poolwatch or Prometheus sets it (reserved: target, pool, job, instance, kind, database, user, mode, query, version, state, list, cache, node, role, address, upstream, reason, refusal)`,
		"labels-not-mapping.yml":                    `testdata/bad/labels-not-mapping.yml:5: targets[0].labels: must be a mapping, not a list`,
		"merge-key.yml":                             `testdata/bad/merge-key.yml:6: targets[1]: YAML merge keys (<<) are not supported`,
		"missing-dsn.yml":                           `testdata/bad/missing-dsn.yml:2: targets[0].dsn: missing required key`,
		"missing-kind.yml":                          `testdata/bad/missing-kind.yml:2: targets[0].kind: missing required key`,
		"missing-value.yml":                         `testdata/bad/missing-value.yml:2: targets[0].name: missing value`,
		"multiple-documents.yml":                    `testdata/bad/multiple-documents.yml:5: (root): the file has more than one YAML document: put the whole configuration in one`,
		"negative-duration.yml":                     `testdata/bad/negative-duration.yml:3: defaults.probe_pool.retry_backoff: must not be negative, got -100ms`,
		"negative-max-pools.yml":                    `testdata/bad/negative-max-pools.yml:2: defaults.max_pools: must not be negative, got -5`,
		"negative-size.yml":                         `testdata/bad/negative-size.yml:6: targets[0].probe_pool.min_connections: must not be negative, got -1`,
		"no-targets-key.yml":                        `testdata/bad/no-targets-key.yml:1: targets: at least one target is required`,
		"no-targets.yml":                            `testdata/bad/no-targets.yml:3: targets: at least one target is required`,
		"password-dsn-and-file.yml":                 `testdata/bad/password-dsn-and-file.yml:5: targets[0].password_file: more than one password source (a password in the DSN and password_file): keep one`,
		"password-dsn-keyword-and-file.yml":         `testdata/bad/password-dsn-keyword-and-file.yml:5: targets[0].password_file: more than one password source (a password in the DSN and password_file): keep one`,
		"password-dsn-query-and-env.yml":            `testdata/bad/password-dsn-query-and-env.yml:5: targets[0].password_env: more than one password source (a password in the DSN and password_env): keep one`,
		"password-env-invalid-name.yml":             `testdata/bad/password-env-invalid-name.yml:5: targets[0].password_env: must be the name of an environment variable (letters, digits and _, not starting with a digit)`,
		"password-env-unset.yml":                    `testdata/bad/password-env-unset.yml:5: targets[0].password_env: environment variable "POOLWATCH_TEST_UNSET_PASSWORD" is not set or empty`,
		"password-file-and-env.yml":                 `testdata/bad/password-file-and-env.yml:6: targets[0].password_env: more than one password source (password_file and password_env): keep one`,
		"password-file-device.yml":                  `testdata/bad/password-file-device.yml:5: targets[0].password_file: cannot read password file: /dev/null is a device, not a regular file`,
		"password-file-directory.yml":               `testdata/bad/password-file-directory.yml:5: targets[0].password_file: cannot read password file: testdata/bad/secrets/a-directory is a directory`,
		"password-file-empty.yml":                   `testdata/bad/password-file-empty.yml:5: targets[0].password_file: password file testdata/bad/secrets/empty is empty`,
		"password-file-fifo.yml":                    `testdata/bad/password-file-fifo.yml:5: targets[0].password_file: cannot read password file: testdata/bad/secrets/fifo is a named pipe (FIFO), not a regular file`,
		"password-file-newline-only.yml":            `testdata/bad/password-file-newline-only.yml:5: targets[0].password_file: password file testdata/bad/secrets/newline-only is empty`,
		"password-file-empty-path.yml":              `testdata/bad/password-file-empty-path.yml:5: targets[0].password_file: must not be empty`,
		"password-file-missing.yml":                 `testdata/bad/password-file-missing.yml:5: targets[0].password_file: cannot read password file: open testdata/bad/secrets/no-such-file: no such file or directory`,
		"pgpool-probe-max-two.yml":                  `testdata/bad/pgpool-probe-max-two.yml:6: targets[0].probe_pool.max_connections: a pgpool target holds at most 1 connection: each takes one of Pgpool-II's child processes (num_init_children)`,
		"pgbouncer-not-console.yml":                 `testdata/bad/pgbouncer-not-console.yml:4: targets[0].dsn: a pgbouncer target connects to the admin console: the DSN's database must be "pgbouncer", not "orders"`,
		"probe-max-less-than-default-min.yml":       `testdata/bad/probe-max-less-than-default-min.yml:10: targets[0].probe_pool.max_connections: 1 is less than min_connections 2 (defaults.probe_pool.min_connections, line 3)`,
		"probe-min-greater-than-default-max.yml":    `testdata/bad/probe-min-greater-than-default-max.yml:9: targets[0].probe_pool.min_connections: 4 is greater than max_connections 3 (defaults.probe_pool.max_connections, line 3)`,
		"probe-min-greater-than-builtin-max.yml":    `testdata/bad/probe-min-greater-than-builtin-max.yml:3: defaults.probe_pool.min_connections: 3 is greater than max_connections 2 (built-in default)`,
		"probe-min-greater-than-max.yml":            `testdata/bad/probe-min-greater-than-max.yml:3: defaults.probe_pool.min_connections: 4 is greater than max_connections 2 (defaults.probe_pool.max_connections, line 4)`,
		"root-not-mapping.yml":                      `testdata/bad/root-not-mapping.yml:1: (root): the configuration must be a mapping with the keys defaults and targets, not a list`,
		"scrape-timeout-below-connect-timeout.yml":  `testdata/bad/scrape-timeout-below-connect-timeout.yml:8: targets[0].scrape_timeout: 2s is shorter than probe_pool.connect_timeout 3s (defaults.probe_pool.connect_timeout, line 3)`,
		"log-query-text-on-pgbouncer.yml":           `testdata/bad/log-query-text-on-pgbouncer.yml:5: targets[0].log_query_text: applies to postgres targets only: only they log a leaked connection's query`,
		"pinned-pools-not-a-list.yml":               `testdata/bad/pinned-pools-not-a-list.yml:2: defaults.pinned_pools: must be a list, not a scalar`,
		"pinned-pools-empty-glob.yml":               `testdata/bad/pinned-pools-empty-glob.yml:7: targets[0].pinned_pools[1]: must not be empty`,
		"pinned-pools-mapping-item.yml":             `testdata/bad/pinned-pools-mapping-item.yml:6: targets[0].pinned_pools[0]: must be a single value, not a mapping`,
		"session-mode-leaks-on-postgres.yml":        `testdata/bad/session-mode-leaks-on-postgres.yml:5: targets[0].session_mode_leaks: applies to pgbouncer targets only`,
		"statement-timeout-on-pgbouncer.yml":        `testdata/bad/statement-timeout-on-pgbouncer.yml:6: targets[0].probe_pool.statement_timeout: applies to postgres targets only: the PgBouncer console rejects it`,
		"statement-timeout-sub-millisecond.yml":     `testdata/bad/statement-timeout-sub-millisecond.yml:3: defaults.probe_pool.statement_timeout: must be a whole number of milliseconds, got 1500us`,
		"syntax-error-after-multiline-flow.yml":     `testdata/bad/syntax-error-after-multiline-flow.yml:7: (root): invalid YAML: found unexpected end of stream`,
		"syntax-error-missing-colon.yml":            `testdata/bad/syntax-error-missing-colon.yml:3: (root): invalid YAML: could not find expected ':'`,
		"syntax-error-tab.yml":                      `testdata/bad/syntax-error-tab.yml:2: (root): invalid YAML: found character that cannot start any token`,
		"syntax-error-unclosed-flow.yml":            `testdata/bad/syntax-error-unclosed-flow.yml:5: (root): invalid YAML: did not find expected ',' or '}'`,
		"syntax-error.yml":                          `testdata/bad/syntax-error.yml:4: (root): invalid YAML: did not find expected '-' indicator`,
		"target-name-empty.yml":                     `testdata/bad/target-name-empty.yml:2: targets[0].name: must not be empty`,
		"target-name-invalid.yml":                   `testdata/bad/target-name-invalid.yml:2: targets[0].name: invalid target name "orders db": use only letters, digits and _ . : -`,
		"target-name-missing.yml":                   `testdata/bad/target-name-missing.yml:2: targets[0].name: missing required key`,
		"target-not-mapping.yml":                    `testdata/bad/target-not-mapping.yml:2: targets[0]: a target must be a mapping, not a scalar`,
		"targets-not-list.yml":                      `testdata/bad/targets-not-list.yml:2: targets: must be a list, not a mapping`,
		"tls-cert-without-key.yml":                  `testdata/bad/tls-cert-without-key.yml:6: targets[0].tls.cert_file: cert_file needs key_file too`,
		"tls-conflicts-with-dsn.yml":                `testdata/bad/tls-conflicts-with-dsn.yml:7: targets[0].dsn: the DSN sets sslrootcert and tls.ca_file is set too (defaults.tls.ca_file, line 3): set the file in one place`,
		"tls-file-device.yml":                       `testdata/bad/tls-file-device.yml:3: defaults.tls.ca_file: cannot read file: /dev/null is a device, not a regular file`,
		"tls-file-missing.yml":                      `testdata/bad/tls-file-missing.yml:3: defaults.tls.ca_file: cannot read file: open testdata/bad/tls/missing-ca.pem: no such file or directory`,
		"tls-with-sslmode-disable.yml":              `testdata/bad/tls-with-sslmode-disable.yml:4: targets[0].dsn: tls.ca_file is set (targets[0].tls.ca_file, line 6) but this DSN never uses TLS (sslmode=disable or a Unix socket): unset it for this target with an empty value`,
		"unknown-key-application-pool.yml":          `testdata/bad/unknown-key-application-pool.yml:8: targets[0].application_pools[0].max_size: unknown key; valid keys here: name, application_name, user, database, min_connections, max_connections`,
		"unknown-key-defaults.yml":                  `testdata/bad/unknown-key-defaults.yml:3: defaults.scrape_interval: unknown key; valid keys here: scrape_timeout, min_scrape_interval, leak_threshold, session_mode_leaks, max_pools, pinned_pools, log_query_text, labels, tls, probe_pool, body_size_limit`,
		"unknown-key-probe-pool.yml":                `testdata/bad/unknown-key-probe-pool.yml:4: defaults.probe_pool.max_conns: unknown key; valid keys here: min_connections, max_connections, connect_timeout, health_check_timeout, acquire_retries, retry_backoff, leak_threshold, idle_close, statement_timeout, lock_timeout`,
		"unknown-key-root.yml":                      `testdata/bad/unknown-key-root.yml:1: scrape_timeout: unknown key; valid keys here: defaults, targets, auth_modules, probe`,
		"unknown-key-target.yml":                    `testdata/bad/unknown-key-target.yml:5: targets[0].passwd_file: unknown key; valid keys here: name, kind, dsn, password_file, password_env, application_pools, scrape_timeout, min_scrape_interval, leak_threshold, session_mode_leaks, max_pools, pinned_pools, log_query_text, labels, tls, probe_pool, upstream, url, format, pool_label, http_client, seen_as, body_size_limit`,
		"unknown-key-tls.yml":                       `testdata/bad/unknown-key-tls.yml:3: defaults.tls.ca: unknown key; valid keys here: ca_file, cert_file, key_file`,
		"upstream-empty.yml":                        `testdata/bad/upstream-empty.yml:8: targets[1].upstream: must not be empty: name the postgres target behind this one, or remove the key`,
		"upstream-in-defaults.yml":                  `testdata/bad/upstream-in-defaults.yml:2: defaults.upstream: unknown key; valid keys here: scrape_timeout, min_scrape_interval, leak_threshold, session_mode_leaks, max_pools, pinned_pools, log_query_text, labels, tls, probe_pool, body_size_limit`,
		"upstream-not-postgres.yml":                 `testdata/bad/upstream-not-postgres.yml:8: targets[1].upstream: target "bouncer-1" is a pgbouncer target: name the postgres target behind this one`,
		"upstream-on-postgres.yml":                  `testdata/bad/upstream-on-postgres.yml:5: targets[0].upstream: a postgres target is its own upstream: set upstream on the pgbouncer targets in front of it`,
		"upstream-unknown.yml":                      `testdata/bad/upstream-unknown.yml:5: targets[0].upstream: no target is named "orders-db": name the postgres target of this configuration behind this one`,
		"unknown-kind.yml":                          `testdata/bad/unknown-kind.yml:3: targets[0].kind: unknown kind "mysql": use postgres, pgbouncer, pgpool, pgcat, odyssey or application`,
		"wrong-type-bool.yml":                       `testdata/bad/wrong-type-bool.yml:2: defaults.session_mode_leaks: must be true or false, not "yes"`,
		"wrong-type-float.yml":                      `testdata/bad/wrong-type-float.yml:2: defaults.max_pools: must be an integer, not "10.5"`,
		"wrong-type-int.yml":                        `testdata/bad/wrong-type-int.yml:3: defaults.probe_pool.max_connections: must be an integer, not "two"`,
		"wrong-type-list-for-scalar.yml":            `testdata/bad/wrong-type-list-for-scalar.yml:2: targets[0].name: must be a single value, not a list`,
		"wrong-type-scalar-for-mapping.yml":         `testdata/bad/wrong-type-scalar-for-mapping.yml:2: defaults.probe_pool: must be a mapping, not a scalar`,
		"zero-duration.yml":                         `testdata/bad/zero-duration.yml:5: targets[0].scrape_timeout: must be greater than 0`,
		"zero-max-connections.yml":                  `testdata/bad/zero-max-connections.yml:3: defaults.probe_pool.max_connections: must be at least 1, got 0`,
		"zero-max-pools.yml":                        `testdata/bad/zero-max-pools.yml:2: defaults.max_pools: must be at least 1, got 0`,
	}
}

// fifoFile is the FIFO that testdata/bad/password-file-fifo.yml names: git
// cannot hold one, so the test makes it.
const fifoFile = "testdata/bad/secrets/fifo"

func TestLoad_RejectsEachBadConfigWithItsExactError(t *testing.T) {
	hermeticEnv(t)
	_ = os.Remove(fifoFile) // left by a killed run
	require.NoError(t, syscall.Mkfifo(fifoFile, 0o600))
	t.Cleanup(func() { _ = os.Remove(fifoFile) })
	want := badConfigs()
	maps.Copy(want, applicationBadConfigs())
	files, err := filepath.Glob("testdata/bad/*.yml")
	require.NoError(t, err)
	require.Len(t, files, len(want), "every file in testdata/bad needs an expected error, and every expected error a file")
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			expected, ok := want[filepath.Base(file)]
			require.True(t, ok, "no expected error for %s", file)
			cfg, err := Load(file)
			require.Nil(t, cfg)
			require.Error(t, err)
			require.Equal(t, expected, err.Error())
			var cerr *Error
			require.ErrorAs(t, err, &cerr)
			require.Equal(t, file, cerr.File)
			require.NotContains(t, err.Error(), "\n")
			requireNoSecret(t, err.Error())
		})
	}
}

func TestLoad_MinimalConfigGetsBuiltinDefaults(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Load("testdata/good/minimal.yml")
	require.NoError(t, err)
	require.Equal(t, []Target{{
		Name:              "db1",
		Kind:              KindPostgres,
		DSN:               "postgres://poolwatch@127.0.0.1:5432/postgres",
		Labels:            map[string]string{},
		ScrapeTimeout:     5 * time.Second,
		MinScrapeInterval: 0,
		LeakThreshold:     5 * time.Minute,
		MaxPools:          1000,
		ProbePool: ProbePool{
			MinConnections:     1, // the probe pool keeps one connection between scrapes
			MaxConnections:     2,
			AcquireRetries:     3,
			ConnectTimeout:     3 * time.Second,
			HealthCheckTimeout: time.Second,
			RetryBackoff:       100 * time.Millisecond,
			LeakThreshold:      30 * time.Second,
			IdleClose:          10 * time.Minute,
			StatementTimeout:   5 * time.Second,
			LockTimeout:        time.Second,
		},
	}}, cfg.Targets())
}

func TestLoad_FullConfigMergesDefaultsKeyByKey(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Load("testdata/good/full.yml")
	require.NoError(t, err)
	defaultLabels := map[string]string{"env": "prod", "region": "eu-1", "team": "platform"}
	want := []Target{
		{
			Name:     "orders-db",
			Kind:     KindPostgres,
			DSN:      "postgres://poolwatch@db1:5432/postgres?sslmode=verify-full",
			Password: PasswordSource{File: "testdata/good/secrets/orders-db"},
			// team overridden, region removed with "", env inherited.
			Labels:            map[string]string{"env": "prod", "team": "orders"},
			ScrapeTimeout:     4 * time.Second,
			MinScrapeInterval: 10 * time.Second,
			LeakThreshold:     3 * time.Minute,
			SessionModeLeaks:  false, // postgres: always false
			MaxPools:          500,
			PinnedPools:       []string{"shop/*", "clients"},
			LogQueryText:      true,
			TLS: TLSFiles{
				CAFile:   "testdata/good/tls/ca.pem",
				CertFile: "testdata/good/tls/client.pem",
				KeyFile:  "testdata/good/tls/client.key",
			},
			ApplicationPools: []ApplicationPool{
				{Name: "orders-api", ApplicationName: "orders-api*", MinConnections: intPtr(5), MaxConnections: intPtr(20)},
				{Name: "reports", ApplicationName: "report-?", User: "reporter", Database: "orders*"},
			},
			ProbePool: ProbePool{
				MinConnections:     1,
				MaxConnections:     5, // overridden; the rest from defaults
				AcquireRetries:     2,
				ConnectTimeout:     2 * time.Second,
				HealthCheckTimeout: 500 * time.Millisecond,
				RetryBackoff:       50 * time.Millisecond,
				LeakThreshold:      20 * time.Second,
				IdleClose:          5 * time.Minute,
				StatementTimeout:   3 * time.Second,
				LockTimeout:        250 * time.Millisecond,
			},
		},
		{
			Name:              "bouncer-1",
			Kind:              KindPgBouncer,
			DSN:               "postgres://stats@pgb1:6432/pgbouncer?sslmode=require",
			Password:          PasswordSource{Env: "POOLWATCH_TEST_BOUNCER_PASSWORD"},
			Labels:            defaultLabels,
			ScrapeTimeout:     800 * time.Millisecond,
			MinScrapeInterval: 10 * time.Second,
			LeakThreshold:     2 * time.Minute,
			SessionModeLeaks:  true,
			MaxPools:          500,
			PinnedPools:       []string{"shop/*", "clients"},
			TLS:               TLSFiles{CAFile: "testdata/good/tls/ca.pem"},
			ProbePool: ProbePool{
				MinConnections:     1,
				MaxConnections:     3,
				AcquireRetries:     0,
				ConnectTimeout:     750 * time.Millisecond,
				HealthCheckTimeout: 500 * time.Millisecond,
				RetryBackoff:       0,
				LeakThreshold:      20 * time.Second,
				IdleClose:          0,
				StatementTimeout:   0, // pgbouncer: never sent
				LockTimeout:        0,
			},
		},
		{
			Name:              "db2.example:5433",
			Kind:              KindPostgres,
			DSN:               "host=db2 port=5433 user=poolwatch dbname=postgres sslmode=disable",
			Labels:            defaultLabels,
			ScrapeTimeout:     4 * time.Second,
			MinScrapeInterval: 0,
			LeakThreshold:     3 * time.Minute,
			MaxPools:          500,
			PinnedPools:       []string{"shop/*", "clients"},
			TLS:               TLSFiles{}, // the default ca_file unset with ""
			ProbePool: ProbePool{
				MinConnections:     1,
				MaxConnections:     3,
				AcquireRetries:     2,
				ConnectTimeout:     2 * time.Second,
				HealthCheckTimeout: 500 * time.Millisecond,
				RetryBackoff:       50 * time.Millisecond,
				LeakThreshold:      20 * time.Second,
				IdleClose:          5 * time.Minute,
				StatementTimeout:   4 * time.Second, // 0 = the scrape timeout
				LockTimeout:        0,
			},
		},
	}
	require.Equal(t, want, cfg.Targets())
}

func TestLoad_ExampleConfigIsValid(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Load("../config.yaml.example")
	require.NoError(t, err)
	targets := cfg.Targets()
	require.Len(t, targets, 4)

	orders := targets[0]
	require.Equal(t, "orders-db", orders.Name)
	require.Equal(t, KindPostgres, orders.Kind)
	require.Equal(t, PasswordSource{Env: "ORDERS_DB_PASSWORD"}, orders.Password)
	require.Equal(t, map[string]string{"env": "prod", "team": "orders"}, orders.Labels)
	require.Equal(t, []ApplicationPool{{
		Name: "orders-api", ApplicationName: "orders-api*", MinConnections: intPtr(5), MaxConnections: intPtr(20),
	}}, orders.ApplicationPools)
	require.Equal(t, 5*time.Minute, orders.LeakThreshold)

	bouncer := targets[1]
	require.Equal(t, KindPgBouncer, bouncer.Kind)
	require.Equal(t, "orders-db", bouncer.Upstream)
	require.Equal(t, "orders-db", UpstreamOf(&bouncer))
	require.Equal(t, "orders-db", UpstreamOf(&orders))
	require.Equal(t, 2*time.Minute, bouncer.LeakThreshold)
	require.False(t, bouncer.SessionModeLeaks)

	app := targets[3]
	require.Equal(t, KindApplication, app.Kind)
	require.Equal(t, "http://10.0.0.7:8080/metrics", app.URL)
	require.Equal(t, []SeenAs{{Target: "orders-db", ApplicationName: "orders-api*", Compare: CompareAuto}}, app.SeenAs)
	require.Equal(t, []string{"orders-api*"}, orders.Applications)
	require.Equal(t, ByteSize(10<<20), app.BodySizeLimit, "the example shows the built-in default")

	// The example's values are the built-in defaults: the minimal config
	// gets the same ones.
	minimal, err := Load("testdata/good/minimal.yml")
	require.NoError(t, err)
	m := minimal.Targets()[0]
	for _, tg := range targets {
		require.Equal(t, m.ScrapeTimeout, tg.ScrapeTimeout)
		require.Equal(t, m.MinScrapeInterval, tg.MinScrapeInterval)
		require.Equal(t, m.MaxPools, tg.MaxPools)
		require.Equal(t, m.TLS, tg.TLS)
	}
	require.Equal(t, m.ProbePool, orders.ProbePool)
	pb := m.ProbePool
	pb.StatementTimeout, pb.LockTimeout = 0, 0
	require.Equal(t, pb, bouncer.ProbePool)

	pgpool := targets[2]
	require.Equal(t, KindPgpool, pgpool.Kind)
	pp := pb
	pp.MaxConnections = PgpoolMaxProbeConnections
	require.Equal(t, pp, pgpool.ProbePool, "one child, whatever the default")
}

// TestLoad_RefusesAFIFOWithoutBlocking names, as password_file and as
// tls.ca_file, a FIFO that no one writes to: opening it for reading would
// block forever. Load must refuse it at once; the 10 s bound only keeps a
// regression from hanging the suite.
func TestLoad_RefusesAFIFOWithoutBlocking(t *testing.T) {
	hermeticEnv(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	for key, yml := range map[string]string{
		"targets[0].password_file": "targets:\n  - name: db1\n    kind: postgres\n    dsn: postgres://u@db1/postgres\n    password_file: fifo\n",
		"targets[0].tls.ca_file":   "targets:\n  - name: db1\n    kind: postgres\n    dsn: postgres://u@db1/postgres\n    tls: {ca_file: fifo}\n",
	} {
		done := make(chan error, 1)
		go func() {
			_, err := Parse(filepath.Join(dir, "c.yml"), []byte(yml))
			done <- err
		}()
		select {
		case err := <-done:
			var cerr *Error
			require.ErrorAs(t, err, &cerr)
			require.Equal(t, key, cerr.Path)
			require.Contains(t, cerr.Msg, fifo+" is a named pipe (FIFO), not a regular file")
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Parse blocked on a FIFO", key)
		}
	}
}

// TestParse_PasswordFileOfAShortPasswordIsNotEmpty: only a file holding
// nothing or a lone newline is empty; one or two bytes of password are not.
func TestParse_PasswordFileOfAShortPasswordIsNotEmpty(t *testing.T) {
	hermeticEnv(t)
	for content, empty := range map[string]bool{"": true, "\n": true, "\r\n": true, "x": false, "x\n": false, "xy": false, "\n\n": false, "\r\nx": false} {
		pw := writeFile(t, content)
		_, err := Parse("c.yml", []byte("targets:\n  - name: db1\n    kind: postgres\n    dsn: postgres://u@db1/postgres\n    password_file: "+pw+"\n"))
		if empty {
			require.EqualError(t, err, "c.yml:5: targets[0].password_file: password file "+pw+" is empty", "content %q", content)
		} else {
			require.NoError(t, err, "content %q", content)
		}
	}
}

func TestLoad_MissingFileWrapsTheOSError(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yml"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Contains(t, err.Error(), "read config file: open ")
}

func TestParse_EmptyFilenameIsNamedInput(t *testing.T) {
	_, err := Parse("", nil)
	require.EqualError(t, err, "<input>:1: (root): the file is empty")
}

func TestParse_ErrorsNeverContainPasswords(t *testing.T) {
	hermeticEnv(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte("S3cret-in-file\n"), 0o600))

	target := func(extra string) string {
		return "targets:\n  - name: db1\n    kind: postgres\n" + extra
	}
	cases := map[string]string{ //nolint:gosec // test passwords
		"unknown kind":               "targets:\n  - name: db1\n    kind: mysql\n    dsn: postgres://u:S3cret-a@db1/postgres\n",
		"password and password_file": target("    dsn: postgres://u:S3cret-b@db1/postgres\n    password_file: " + pwFile + "\n"),
		"password and password_env":  target("    dsn: postgres://u:S3cret-c@db1/postgres\n    password_env: POOLWATCH_TEST_PASSWORD\n"),
		"query password and file":    target("    dsn: postgres://u@db1/postgres?password=S3cret-d\n    password_file: " + pwFile + "\n"),
		"kv password and file":       target("    dsn: \"user=u password=S3cret-e host=db1\"\n    password_file: " + pwFile + "\n"),
		"bad port":                   target("    dsn: postgres://u:S3cret-f@db1:nope/postgres\n"),
		"unencoded slash":            target("    dsn: postgres://u:S3cret/g@db1/postgres\n"),
		"unencoded at":               target("    dsn: postgres://u:S3cret@h@db1/postgres\n"),
		"unencoded at and bad port":  target("    dsn: postgres://u:S3cret@h@db1:x/postgres\n"),
		"unencoded question mark":    target("    dsn: postgres://u:S3cret?i@db1:x/postgres\n"),
		"colon in password":          target("    dsn: postgres://u:S3c:ret-j@db1:5432:5433/postgres\n"),
		"bad percent escape":         target("    dsn: postgres://u:S3cret-k%G1@db1/postgres\n"),
		"bad query":                  target("    dsn: postgres://u:S3cret-l@db1/postgres?sslmode\n"),
		"query password bad":         target("    dsn: postgres://u@db1/postgres?password=S3cret-m=x\n"),
		"kv unterminated":            target("    dsn: \"user=u password='S3cret-n host=db1\"\n"),
		"kv no equals":               target("    dsn: \"user=u password=S3cret-o host\"\n"),
		"kv bad port":                target("    dsn: \"user=u password=S3cret-p port=S3cret-p\"\n"),
		"multiple hosts":             target("    dsn: postgres://u:S3cret-q@db1,db2/postgres\n"),
		"pgbouncer database":         "targets:\n  - name: b\n    kind: pgbouncer\n    dsn: postgres://u:S3cret-r@db1/postgres\n",
		"pool key":                   target("    dsn: postgres://u:S3cret-s@db1/postgres?pool_max_conns=S3cret-s\n"),
		"bad sslmode":                target("    dsn: postgres://u:S3cret-t@db1/postgres?sslmode=S3cret-t\n"),
		"ssl file missing":           target("    dsn: postgres://u:S3cret-u@db1/postgres?sslmode=verify-full&sslrootcert=/nonexistent/S3cret-u\n"),
		"duplicate name":             target("    dsn: postgres://u:S3cret-v@db1/postgres\n  - name: db1\n    kind: postgres\n    dsn: postgres://u:S3cret-v@db1/postgres\n"),
		"unknown key next to dsn":    target("    dsn: postgres://u:S3cret-w@db1/postgres\n    passwrd: S3cret-w\n"),
		"password as env name":       target("    dsn: postgres://u@db1/postgres\n    password_env: S3cret-y!\n"),
		"yaml syntax in dsn line":    target("    dsn: postgres://u:S3cret-x@db1/postgres\n   bad: [\n"),
	}
	for name, yml := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "c.yml"), []byte(yml))
			require.Error(t, err)
			t.Log(err)
			requireNoSecret(t, err.Error())
		})
	}
}

func TestParse_EnvPasswordIsCheckedWithoutLeakingIt(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Parse("c.yml", []byte("targets:\n  - name: db1\n    kind: postgres\n    dsn: postgres://u@db1/postgres\n    password_env: POOLWATCH_TEST_PASSWORD\n"))
	require.NoError(t, err)
	tg, ok := cfg.Target("db1")
	require.True(t, ok)
	pw, err := tg.Password.NewReader().Read(context.Background())
	require.NoError(t, err)
	require.Equal(t, testEnvPassword, pw)
}

func TestParse_AcceptsSupportedDSNForms(t *testing.T) {
	hermeticEnv(t)
	for _, dsn := range []string{
		"postgres://poolwatch@db1:5432/postgres?sslmode=verify-full",
		"postgresql://poolwatch@db1/postgres",
		"postgres://poolwatch@[::1]:5432/postgres",
		"postgres:///postgres?host=/var/run/postgresql",
		"host=db1 port=5432 user=poolwatch dbname=postgres sslmode=prefer application_name='pool watch'",
		"postgres://poolwatch@db1/postgres?sslmode=disable&application_name=poolwatch&connect_timeout=3",
	} {
		t.Run(dsn, func(t *testing.T) {
			_, err := Parse("c.yml", []byte("targets:\n  - name: db1\n    kind: postgres\n    dsn: \""+dsn+"\"\n"))
			require.NoError(t, err)
		})
	}
}

func TestParse_RejectsKeywordValueMultipleHosts(t *testing.T) {
	hermeticEnv(t)
	_, err := Parse("c.yml", []byte("targets:\n  - name: db1\n    kind: postgres\n    dsn: host=a,b user=u\n"))
	require.EqualError(t, err, "c.yml:4: targets[0].dsn: the DSN lists 2 hosts: a target is one server, give each its own target")
}

func TestParse_ResolvesAliases(t *testing.T) {
	hermeticEnv(t)
	yml := `defaults:
  labels: &l {env: prod}
targets:
  - name: db1
    kind: &k postgres
    dsn: postgres://u@db1/postgres
    labels: *l
  - name: db2
    kind: *k
    dsn: postgres://u@db2/postgres
`
	cfg, err := Parse("c.yml", []byte(yml))
	require.NoError(t, err)
	tg, ok := cfg.Target("db2")
	require.True(t, ok)
	require.Equal(t, KindPostgres, tg.Kind)
	require.Equal(t, map[string]string{"env": "prod"}, tg.Labels)
}

func TestParse_DerivedTimeoutsFollowAShortScrapeTimeout(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Parse("c.yml", []byte("defaults:\n  scrape_timeout: 400ms\ntargets:\n  - name: db1\n    kind: postgres\n    dsn: postgres://u@db1/postgres\n"))
	require.NoError(t, err)
	pp := cfg.Targets()[0].ProbePool
	require.Equal(t, 400*time.Millisecond, pp.ConnectTimeout)
	require.Equal(t, 400*time.Millisecond, pp.HealthCheckTimeout)
	require.Equal(t, 400*time.Millisecond, pp.StatementTimeout)
}

func TestParse_AbsolutePathsAreKept(t *testing.T) {
	hermeticEnv(t)
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("S3cret\n"), 0o600))
	cfg, err := Parse("some/dir/c.yml", []byte("targets:\n  - name: db1\n    kind: postgres\n    dsn: postgres://u@db1/postgres\n    password_file: "+pw+"\n"))
	require.NoError(t, err)
	require.Equal(t, PasswordSource{File: pw}, cfg.Targets()[0].Password)
}

func TestParse_ErrorsAreConfigErrorsWithLocation(t *testing.T) {
	_, err := Parse("x.yml", []byte("targets:\n  - name: db1\n    kind: nope\n    dsn: postgres://u@h/db\n"))
	var cerr *Error
	require.True(t, errors.As(err, &cerr))
	require.Equal(t, &Error{File: "x.yml", Line: 3, Path: "targets[0].kind", Msg: `unknown kind "nope": use postgres, pgbouncer, pgpool, pgcat, odyssey or application`}, cerr)
}

func TestConfig_TargetsReturnsCopiesTheCallerMayModify(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Load("testdata/good/full.yml")
	require.NoError(t, err)
	before := cfg.Targets()

	mutated := cfg.Targets()
	mutated[0].Labels["env"] = "changed"
	*mutated[0].ApplicationPools[0].MaxConnections = 99
	mutated[0].ApplicationPools[1].Name = "changed"
	mutated[1] = Target{}

	got, ok := cfg.Target("orders-db")
	require.True(t, ok)
	got.Labels["team"] = "changed"

	require.Equal(t, before, cfg.Targets())
}

func TestConfig_TargetLooksUpByName(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Load("testdata/good/full.yml")
	require.NoError(t, err)
	tg, ok := cfg.Target("db2.example:5433")
	require.True(t, ok)
	require.Equal(t, "db2.example:5433", tg.Name)
	_, ok = cfg.Target("nope")
	require.False(t, ok)

	var nilCfg *Config
	require.Nil(t, nilCfg.Targets())
	_, ok = nilCfg.Target("db1")
	require.False(t, ok)
}

// TestTarget_EqualComparesEveryField changes each field of a target in turn,
// found through reflection so that a field added later is covered too, and
// expects Equal to notice.
func TestTarget_EqualComparesEveryField(t *testing.T) {
	hermeticEnv(t)
	cfg, err := Load("testdata/good/full.yml")
	require.NoError(t, err)
	base := cfg.Targets()[0]
	require.True(t, base.Equal(cfg.Targets()[0]), "equal targets with distinct pointers and maps")
	require.NotEmpty(t, base.ApplicationPools)
	// Equal compares fields whatever the kind: give the slices of the other
	// kinds an element each.
	base.SeenAs = []SeenAs{{Target: "orders-db", ApplicationName: "orders-api*", Compare: CompareAuto}}
	base.Applications = []string{"orders-api*"}

	// at returns the field at path inside the settable value v; -1 selects
	// the first element of a slice.
	at := func(v reflect.Value, path []int) reflect.Value {
		for _, i := range path {
			if i < 0 {
				v = v.Index(0)
			} else {
				v = v.Field(i)
			}
		}
		return v
	}
	mutate := func(path []int) bool {
		other := base.clone()
		f := at(reflect.ValueOf(&other).Elem(), path)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Map:
			m := reflect.MakeMap(f.Type())
			m.SetMapIndex(reflect.ValueOf("extra"), reflect.ValueOf("label"))
			f.Set(m)
		case reflect.Pointer:
			n := reflect.New(f.Type().Elem())
			if !f.IsNil() {
				n.Elem().SetInt(f.Elem().Int() + 1)
			}
			f.Set(n)
		case reflect.Slice:
			f.Set(f.Slice(0, f.Len()-1))
		default:
			t.Fatalf("field %v: unhandled kind %s: extend this test", path, f.Kind())
		}
		return !base.Equal(other) && !other.Equal(base)
	}

	var mutations int
	var walk func(path []int, name string)
	walk = func(path []int, name string) {
		v := at(reflect.ValueOf(&base).Elem(), path)
		switch {
		case v.Type() == reflect.TypeFor[promconfig.HTTPClientConfig]():
			// prometheus/common's type, compared as a whole.
			other := base.clone()
			at(reflect.ValueOf(&other).Elem(), path).FieldByName("FollowRedirects").SetBool(!v.FieldByName("FollowRedirects").Bool())
			require.False(t, base.Equal(other), "Equal ignores a change of %s", name)
			mutations++
			return
		case v.Kind() == reflect.Struct:
			for i := range v.NumField() {
				walk(append(append([]int(nil), path...), i), name+"."+v.Type().Field(i).Name)
			}
			return
		case v.Kind() == reflect.Slice:
			walk(append(append([]int(nil), path...), -1), name+"[0]")
		}
		require.True(t, mutate(path), "Equal ignores a change of %s", name)
		mutations++
	}
	walk(nil, "Target")
	require.Equal(t, 47, mutations, "fields of Target (with ApplicationPool, ProbePool and SeenAs) changed")
}
