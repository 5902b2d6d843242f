// A small application on a real HikariCP pool (Debian's libhikaricp-java
// 2.7.9, with registerMbeans=true) for poolwatch's tests.
//
// HikariCP 2.7.9 ships neither the Micrometer nor the Prometheus metrics
// tracker, and neither library is packaged, so THIS PROGRAM WRITES THE
// EXPOSITION ITSELF: it reads the pool's HikariPoolMXBean and
// HikariConfigMXBean at each request and writes their values under the
// names those trackers use (HikariCP's MicrometerMetricsTracker.java and
// prometheus/HikariCPCollector.java + PrometheusMetricsTracker.java), in the
// text format their registries write (simpleclient's, with its trailing
// comma in label sets). Acquire timeouts are the SQLTransientConnectionException
// this program's own getConnection calls get, which is what the trackers'
// recordConnectionTimeout counts.
//
//   GET  /ready              200
//   GET  /metrics            Micrometer names (hikaricp_connections_active...)
//   GET  /metrics/tracker    HikariCP's own Prometheus tracker names
//   GET  /state              the MXBeans' values as JSON, for the test to compare
//   POST /hold?n=K           check out K connections and keep them
//   POST /release            close (return) every held connection
//   POST /timeout            one getConnection that is expected to time out
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariConfigMXBean;
import com.zaxxer.hikari.HikariDataSource;
import com.zaxxer.hikari.HikariPoolMXBean;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.SQLException;
import java.sql.SQLTransientConnectionException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;

public class HikariApp {
    private static HikariDataSource ds;
    private static final List<Connection> held = new ArrayList<>();
    private static final AtomicLong timeouts = new AtomicLong();

    public static void main(String[] args) throws Exception {
        String listen = null, url = null, user = null, password = "", pool = "HikariPool-1";
        int max = 5, min = 2;
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--listen": listen = args[i + 1]; break;
                case "--jdbc-url": url = args[i + 1]; break;
                case "--user": user = args[i + 1]; break;
                case "--password": password = args[i + 1]; break;
                case "--pool-name": pool = args[i + 1]; break;
                case "--max": max = Integer.parseInt(args[i + 1]); break;
                case "--min": min = Integer.parseInt(args[i + 1]); break;
                default: throw new IllegalArgumentException("unknown flag " + args[i]);
            }
        }
        HikariConfig cfg = new HikariConfig();
        cfg.setJdbcUrl(url);
        cfg.setUsername(user);
        cfg.setPassword(password);
        cfg.setPoolName(pool);
        cfg.setMaximumPoolSize(max);
        cfg.setMinimumIdle(min);
        cfg.setConnectionTimeout(500);
        cfg.setRegisterMbeans(true);
        ds = new HikariDataSource(cfg);

        int colon = listen.lastIndexOf(':');
        HttpServer srv = HttpServer.create(new InetSocketAddress(listen.substring(0, colon), Integer.parseInt(listen.substring(colon + 1))), 16);
        srv.setExecutor(Executors.newFixedThreadPool(4));
        srv.createContext("/ready", ex -> reply(ex, 200, "text/plain", "ok\n"));
        srv.createContext("/metrics/tracker", ex -> reply(ex, 200, "text/plain; version=0.0.4; charset=utf-8", tracker()));
        srv.createContext("/metrics", ex -> reply(ex, 200, "text/plain; version=0.0.4; charset=utf-8", micrometer()));
        srv.createContext("/state", ex -> reply(ex, 200, "application/json", state()));
        srv.createContext("/hold", ex -> {
            int n = Integer.parseInt(ex.getRequestURI().getQuery().replace("n=", ""));
            try {
                for (int i = 0; i < n; i++) {
                    Connection c = ds.getConnection();
                    synchronized (held) { held.add(c); }
                }
                reply(ex, 200, "application/json", state());
            } catch (SQLException e) {
                reply(ex, 500, "text/plain", e.toString());
            }
        });
        srv.createContext("/release", ex -> {
            List<Connection> all;
            synchronized (held) { all = new ArrayList<>(held); held.clear(); }
            for (Connection c : all) {
                try { c.close(); } catch (SQLException e) { /* returned anyway */ }
            }
            reply(ex, 200, "application/json", state());
        });
        srv.createContext("/timeout", ex -> {
            try (Connection c = ds.getConnection()) {
                reply(ex, 409, "text/plain", "the pool was not exhausted");
            } catch (SQLTransientConnectionException e) {
                timeouts.incrementAndGet();
                reply(ex, 200, "application/json", state());
            } catch (SQLException e) {
                reply(ex, 500, "text/plain", e.toString());
            }
        });
        srv.start();
    }

    private static String state() {
        HikariPoolMXBean p = ds.getHikariPoolMXBean();
        HikariConfigMXBean c = ds.getHikariConfigMXBean();
        return String.format("{\"pool\":\"%s\",\"active\":%d,\"idle\":%d,\"total\":%d,\"pending\":%d,\"max\":%d,\"min\":%d,\"timeouts\":%d}",
            c.getPoolName(), p.getActiveConnections(), p.getIdleConnections(), p.getTotalConnections(),
            p.getThreadsAwaitingConnection(), c.getMaximumPoolSize(), c.getMinimumIdle(), timeouts.get());
    }

    private static void gauge(StringBuilder b, String name, String help, String pool, double v) {
        b.append("# HELP ").append(name).append(' ').append(help).append('\n');
        b.append("# TYPE ").append(name).append(" gauge\n");
        b.append(name).append("{pool=\"").append(pool).append("\",} ").append(v).append('\n');
    }

    private static void counter(StringBuilder b, String name, String help, String pool, double v) {
        b.append("# HELP ").append(name).append(' ').append(help).append('\n');
        b.append("# TYPE ").append(name).append(" counter\n");
        b.append(name).append("{pool=\"").append(pool).append("\",} ").append(v).append('\n');
    }

    // micrometer writes the names of HikariCP's MicrometerMetricsTracker as
    // Micrometer's Prometheus registry does (dots to underscores, _total on
    // the counter).
    private static String micrometer() {
        HikariPoolMXBean p = ds.getHikariPoolMXBean();
        HikariConfigMXBean c = ds.getHikariConfigMXBean();
        String pool = c.getPoolName();
        StringBuilder b = new StringBuilder();
        gauge(b, "hikaricp_connections_active", "Active connections", pool, p.getActiveConnections());
        gauge(b, "hikaricp_connections_idle", "Idle connections", pool, p.getIdleConnections());
        gauge(b, "hikaricp_connections_pending", "Pending threads", pool, p.getThreadsAwaitingConnection());
        gauge(b, "hikaricp_connections", "Total connections", pool, p.getTotalConnections());
        gauge(b, "hikaricp_connections_max", "Max connections", pool, c.getMaximumPoolSize());
        gauge(b, "hikaricp_connections_min", "Min connections", pool, c.getMinimumIdle());
        counter(b, "hikaricp_connections_timeout_total", "Connection timeout total count", pool, timeouts.get());
        // A metric of another meter, as a real registry has many.
        b.append("# HELP jvm_threads_live_threads The current number of live threads including both daemon and non-daemon threads\n");
        b.append("# TYPE jvm_threads_live_threads gauge\n");
        b.append("jvm_threads_live_threads ").append((double) Thread.activeCount()).append('\n');
        return b.toString();
    }

    // tracker writes the names of HikariCP's own Prometheus tracker
    // (HikariCPCollector and PrometheusMetricsTracker).
    private static String tracker() {
        HikariPoolMXBean p = ds.getHikariPoolMXBean();
        HikariConfigMXBean c = ds.getHikariConfigMXBean();
        String pool = c.getPoolName();
        StringBuilder b = new StringBuilder();
        gauge(b, "hikaricp_active_connections", "Active connections", pool, p.getActiveConnections());
        gauge(b, "hikaricp_idle_connections", "Idle connections", pool, p.getIdleConnections());
        gauge(b, "hikaricp_pending_threads", "Pending threads", pool, p.getThreadsAwaitingConnection());
        gauge(b, "hikaricp_connections", "The number of current connections", pool, p.getTotalConnections());
        gauge(b, "hikaricp_max_connections", "Max connections", pool, c.getMaximumPoolSize());
        gauge(b, "hikaricp_min_connections", "Min connections", pool, c.getMinimumIdle());
        counter(b, "hikaricp_connection_timeout_total", "Connection timeout total count", pool, timeouts.get());
        return b.toString();
    }

    private static void reply(HttpExchange ex, int code, String type, String body) throws IOException {
        byte[] data = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", type);
        ex.sendResponseHeaders(code, data.length);
        try (OutputStream os = ex.getResponseBody()) { os.write(data); }
    }
}
