// A small application on node-postgres' Pool, instrumented by
// @opentelemetry/instrumentation-pg and exported by
// @opentelemetry/exporter-prometheus: a live producer of OpenTelemetry's
// database client pool metrics (db.client.connection.count{state},
// db.client.connection.pending_requests) for poolwatch's tests.
//
//   node app.js --listen 127.0.0.1:PORT --dsn postgres://... [--max 5] [--app-name NAME]
//
//   GET  /ready          200
//   GET  /metrics        the exporter's exposition
//   GET  /state          the Pool's own counts: totalCount, idleCount, waitingCount
//   POST /hold?n=K       check out K clients and keep them
//   POST /release        release every held client
//   GET  /old-names      the older db.client.connections.* names, written by
//                        THIS PROGRAM through the real SDK and exporter (no
//                        library emits them for node-postgres): for golden files
'use strict';

const { MeterProvider } = require('@opentelemetry/sdk-metrics');
const { PrometheusExporter } = require('@opentelemetry/exporter-prometheus');
const { PgInstrumentation } = require('@opentelemetry/instrumentation-pg');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { metrics } = require('@opentelemetry/api');
const http = require('http');

function flag(name, def) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : def;
}

const exporter = new PrometheusExporter({ preventServerStart: true });
const provider = new MeterProvider({ readers: [exporter] });
metrics.setGlobalMeterProvider(provider);
registerInstrumentations({ meterProvider: provider, instrumentations: [new PgInstrumentation()] });

// Required after the instrumentation is registered, so that it is patched.
// The connection settings are given one by one, not as a connection
// string: the instrumentation names the pool after host, port and database
// ("127.0.0.1:5432/postgres"), which it reads from the Pool's options.
const pg = require('pg');
const dsn = new URL(flag('dsn'));
const pool = new pg.Pool({
  host: dsn.hostname,
  port: Number(dsn.port || '5432'),
  database: decodeURIComponent(dsn.pathname.slice(1)) || 'postgres',
  user: decodeURIComponent(dsn.username),
  password: decodeURIComponent(dsn.password),
  max: Number(flag('max', '5')),
  application_name: flag('app-name', 'orders-node'),
});

// The older names, on a meter of their own, from the same Pool's counts.
const oldExporter = new PrometheusExporter({ preventServerStart: true });
const oldProvider = new MeterProvider({ readers: [oldExporter] });
const oldMeter = oldProvider.getMeter('poolwatch-test-old-semconv');
const usage = oldMeter.createObservableUpDownCounter('db.client.connections.usage', { unit: '{connection}' });
const oldMax = oldMeter.createObservableUpDownCounter('db.client.connections.max', { unit: '{connection}' });
const oldPending = oldMeter.createObservableUpDownCounter('db.client.connections.pending_requests', { unit: '{request}' });
const poolName = 'orders-node';
oldMeter.addBatchObservableCallback((r) => {
  r.observe(usage, pool.totalCount - pool.idleCount, { state: 'used', 'pool.name': poolName });
  r.observe(usage, pool.idleCount, { state: 'idle', 'pool.name': poolName });
  r.observe(oldMax, pool.options.max, { 'pool.name': poolName });
  r.observe(oldPending, pool.waitingCount, { 'pool.name': poolName });
}, [usage, oldMax, oldPending]);

const held = [];

function state() {
  return { totalCount: pool.totalCount, idleCount: pool.idleCount, waitingCount: pool.waitingCount, max: pool.options.max };
}

function json(res, code, body) {
  const data = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}

const server = http.createServer(async (req, res) => {
  const u = new URL(req.url, 'http://x');
  try {
    if (u.pathname === '/ready') {
      json(res, 200, { ready: true });
    } else if (u.pathname === '/metrics') {
      exporter.getMetricsRequestHandler(req, res);
    } else if (u.pathname === '/old-names') {
      oldExporter.getMetricsRequestHandler(req, res);
    } else if (u.pathname === '/state') {
      json(res, 200, state());
    } else if (u.pathname === '/hold' && req.method === 'POST') {
      const n = Number(u.searchParams.get('n') || '1');
      for (let i = 0; i < n; i++) {
        const c = await pool.connect();
        await c.query('SELECT 1');
        held.push(c);
      }
      json(res, 200, state());
    } else if (u.pathname === '/release' && req.method === 'POST') {
      while (held.length > 0) held.pop().release();
      json(res, 200, state());
    } else {
      json(res, 404, { error: 'not found' });
    }
  } catch (e) {
    json(res, 500, { error: String(e) });
  }
});

const listen = flag('listen');
const colon = listen.lastIndexOf(':');
server.listen(Number(listen.slice(colon + 1)), listen.slice(0, colon));
// Held clients would keep pool.end() waiting: release them, and exit
// without waiting for the pool.
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    while (held.length > 0) held.pop().release();
    server.close();
    process.exit(0);
  });
}
