"""dbis_core's application instance, kept small: an HTTP server (Python's standard library)
that reads and writes the core database through `psql` and counts requests in Redis.

  GET  /health     200 when the primary answers `SELECT 1` (what HAProxy and the gate check)
  GET  /accounts   the number of accounts, and this instance's version
  POST /accounts   opens an account (body: owner name), answers its id

Settings (environment): PORT, DB (host:port of the primary), REDIS (host:port,...), VERSION.
"""

import http.server
import os
import socket
import subprocess

DB_HOST, DB_PORT = os.environ["DB"].rsplit(":", 1)
REDIS = [a.rsplit(":", 1) for a in os.environ.get("REDIS", "").split(",") if a]
VERSION = os.environ.get("VERSION", "1")


def sql(query, *params):
    """Runs one statement; parameters are passed as psql variables, quoted by psql itself."""
    args = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", DB_HOST, "-p", DB_PORT,
            "-U", "postgres", "-d", "postgres"]
    for i, p in enumerate(params):
        args += ["-v", f"p{i}={p}"]
    out = subprocess.run(args, input=query, capture_output=True, text=True, timeout=5)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return out.stdout.strip()


def redis_incr(key):
    """INCR on the first Redis that answers (a cache: a miss is not an error)."""
    for host, port in REDIS:
        try:
            with socket.create_connection((host, int(port)), timeout=1) as s:
                s.sendall(f"*2\r\n$4\r\nINCR\r\n${len(key)}\r\n{key}\r\n".encode())
                return s.recv(64).decode().strip().lstrip(":")
        except OSError:
            continue
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def reply(self, code, body):
        data = (body + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            if self.path == "/health":
                self.reply(200, "ok " + sql("SELECT 1"))
            elif self.path == "/accounts":
                hits = redis_incr("hits") or "-"
                n = sql("SELECT count(*) FROM accounts")
                self.reply(200, f"accounts={n} version={VERSION} hits={hits}")
            else:
                self.reply(404, "not found")
        except Exception as e:  # the database is down or the schema is missing
            self.reply(503, f"error: {e}")

    def do_POST(self):
        try:
            owner = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            new_id = sql("INSERT INTO accounts (owner) VALUES (:'p0') RETURNING id", owner)
            self.reply(200, new_id)
        except Exception as e:
            self.reply(503, f"error: {e}")

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()
