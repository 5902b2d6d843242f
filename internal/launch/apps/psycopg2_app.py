#!/usr/bin/python3
"""A small application on psycopg2's ThreadedConnectionPool that reports
its pool as poolwatch's JSON status document, for poolwatch's tests and
demo. Run it with Debian's /usr/bin/python3 (python3-psycopg2).

GET  /ready          200 once the pool is open
GET  /status         the pool, as a typical get_pool_status() writes it:
                     minconn, maxconn, in_use, idle, timeouts (the
                     "connection pool exhausted" errors so far), plus keys
                     poolwatch ignores: first_exhausted_at and
                     first_full_at (Unix times of the first "exhausted"
                     error and of the first time the pool counted maxconn
                     in use; null until then), lost (connections the
                     retry loop lost), connect_errors (new connections
                     that failed), held and leaked
POST /hold?n=K       check out K healthy connections through the retry loop
                     below (--mode decides what happens to a dead one) and
                     keep them
POST /release        return every held connection
POST /leak?n=K       check out K connections, run SELECT 1 on each, and lose
                     them without putconn: the pool counts them in use for ever
GET  /backends       {"held": [pids], "leaked": [pids]}

With --workers N, N threads loop on the founding bug's retry loop: check a
connection out, health-check it with SELECT 1, and on failure try again;
--mode leaky loses the failed connection (it stays counted in use),
--mode fixed closes it with putconn(conn, close=True). Each successful
checkout runs SELECT pg_sleep(--work) and is returned. A connection that
cannot be opened (the server or PgBouncer is down) is counted in
connect_errors and the worker tries again after a pause. The first
"connection pool exhausted" error is logged to stderr, as an application
logs it, and then every 100th.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import psycopg2
import psycopg2.pool


class App:
    def __init__(self, args):
        self.args = args
        self.pool = psycopg2.pool.ThreadedConnectionPool(
            args.minconn, args.maxconn, args.dsn, application_name=args.app_name)
        self.lock = threading.Lock()
        self.held = []
        self.leaked = []
        self.exhausted = 0
        self.first_exhausted_at = None
        self.first_full_at = None
        self.lost = 0
        self.connect_errors = 0
        self.stop = threading.Event()

    def status(self):
        p = self.pool
        with p._lock:  # the pool's own lock: a consistent snapshot
            in_use, idle = len(p._used), len(p._pool)
        with self.lock:
            return {
                "minconn": p.minconn, "maxconn": p.maxconn,
                "in_use": in_use, "idle": idle, "timeouts": self.exhausted,
                "first_exhausted_at": self.first_exhausted_at,
                "first_full_at": self.first_full_at,
                "lost": self.lost, "connect_errors": self.connect_errors,
                "held": len(self.held), "leaked": len(self.leaked),
            }

    def getconn(self):
        try:
            conn = self.pool.getconn()
        except psycopg2.pool.PoolError as e:
            now = time.time()
            with self.lock:
                self.exhausted += 1
                n = self.exhausted
                if self.first_exhausted_at is None:
                    self.first_exhausted_at = now
                if self.first_full_at is None:
                    self.first_full_at = now
            if n == 1 or n % 100 == 0:
                log("ERROR getconn failed (%d so far): psycopg2.pool.PoolError: %s" % (n, e))
            raise
        except psycopg2.Error:
            with self.lock:
                self.connect_errors += 1
            raise
        p = self.pool
        with p._lock:
            full = len(p._used) >= p.maxconn
        if full:
            with self.lock:
                if self.first_full_at is None:
                    self.first_full_at = time.time()
        return conn

    def hold(self, n):
        """Check out n healthy connections through the retry loop (so a
        leaky app loses the dead ones it meets) and keep them."""
        for _ in range(n):
            conn = self.acquire_with_retries()
            with self.lock:
                self.held.append(conn)

    def leak(self, n):
        """Check out n connections, use them, and lose them."""
        for _ in range(n):
            conn = self.getconn()
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            conn.commit()
            with self.lock:
                self.leaked.append(conn)

    def release(self):
        with self.lock:
            held, self.held = self.held, []
        for conn in held:
            self.pool.putconn(conn)

    def backends(self):
        with self.lock:
            return {
                "held": [c.get_backend_pid() for c in self.held if not c.closed],
                "leaked": [c.get_backend_pid() for c in self.leaked if not c.closed],
            }

    def worker(self):
        while not self.stop.is_set():
            try:
                conn = self.acquire_with_retries()
            except psycopg2.Error:  # PoolError, or a connection that failed to open
                self.stop.wait(0.2)
                continue
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_sleep(%s)", (self.args.work,))
                conn.commit()
                self.pool.putconn(conn)
            except psycopg2.Error:
                self.pool.putconn(conn, close=True)
            self.stop.wait(self.args.pause)

    def acquire_with_retries(self):
        last = None
        for _ in range(3):
            conn = self.getconn()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.commit()
                return conn
            except psycopg2.Error as e:
                last = e
                if self.args.mode == "fixed":
                    self.pool.putconn(conn, close=True)
                else:
                    # leaky: conn1 is lost here, still counted in the pool's _used.
                    with self.lock:
                        self.lost += 1
        raise psycopg2.pool.PoolError("no healthy connection after 3 attempts: %s" % last)


def log(msg):
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    print("%s %s" % (ts, msg), file=sys.stderr, flush=True)


def handler_for(app):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = urlparse(self.path).path
            if path == "/ready":
                self.reply(200, {"ready": True})
            elif path == "/status":
                self.reply(200, app.status())
            elif path == "/backends":
                self.reply(200, app.backends())
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):
            u = urlparse(self.path)
            n = int(parse_qs(u.query).get("n", ["1"])[0])
            try:
                if u.path == "/hold":
                    app.hold(n)
                elif u.path == "/leak":
                    app.leak(n)
                elif u.path == "/release":
                    app.release()
                else:
                    self.reply(404, {"error": "not found"})
                    return
            except Exception as e:  # the test reads the reason
                self.reply(500, {"error": str(e)})
                return
            self.reply(200, app.status())

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--app-name", default="orders-api")
    ap.add_argument("--minconn", type=int, default=2)
    ap.add_argument("--maxconn", type=int, default=10)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--mode", choices=["leaky", "fixed"], default="fixed")
    ap.add_argument("--work", type=float, default=0.05)
    ap.add_argument("--pause", type=float, default=0.05)
    args = ap.parse_args()
    app = App(args)
    for _ in range(args.workers):
        threading.Thread(target=app.worker, daemon=True).start()
    host, port = args.listen.rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), handler_for(app)).serve_forever()


if __name__ == "__main__":
    main()
