#!/usr/bin/python3
"""A small application on psycopg_pool's ConnectionPool that serves
pool.get_stats() as it is, as poolwatch's JSON status document, for
poolwatch's tests. Run it with Debian's /usr/bin/python3
(python3-psycopg-pool).

GET  /ready            200 once the pool holds min_size connections
GET  /status           {"name": pool.name, **pool.get_stats()}
POST /hold?n=K         check out K connections and keep them
POST /release          return every held connection
POST /timeout?ms=M     one getconn(timeout=M/1000) that is expected to time
                       out (the pool is exhausted): requests_errors + 1
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import psycopg_pool


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--name", default="orders")
    ap.add_argument("--min-size", type=int, default=2)
    ap.add_argument("--max-size", type=int, default=5)
    args = ap.parse_args()
    pool = psycopg_pool.ConnectionPool(args.dsn, min_size=args.min_size, max_size=args.max_size,
                                       name=args.name, open=True)
    pool.wait(timeout=30)
    lock = threading.Lock()
    held = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
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
                self.reply(200, dict(name=pool.name, **pool.get_stats()))
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):
            u = urlparse(self.path)
            q = parse_qs(u.query)
            try:
                if u.path == "/hold":
                    for _ in range(int(q.get("n", ["1"])[0])):
                        conn = pool.getconn()
                        with lock:
                            held.append(conn)
                elif u.path == "/release":
                    with lock:
                        conns = held[:]
                        held.clear()
                    for conn in conns:
                        pool.putconn(conn)
                elif u.path == "/timeout":
                    try:
                        conn = pool.getconn(timeout=int(q.get("ms", ["100"])[0]) / 1000)
                    except psycopg_pool.PoolTimeout:
                        pass
                    else:
                        pool.putconn(conn)
                        self.reply(409, {"error": "the pool was not exhausted"})
                        return
                else:
                    self.reply(404, {"error": "not found"})
                    return
            except Exception as e:
                self.reply(500, {"error": str(e)})
                return
            self.reply(200, dict(name=pool.name, **pool.get_stats()))

    host, port = args.listen.rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
