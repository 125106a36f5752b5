"""Kafka Connect's REST calls that the stack makes, in front of our launcher.

The local Connect image runs debezium/launcher/OutboxConnect (Connect's
standalone worker without the REST server, whose Jetty classes the pinned
wheel lacks). The compose stack registers the connector through REST
(connect-init: PUT /connectors/NAME/config, then GET .../status), the same
calls as against quay.io/debezium/connect. This process serves exactly those:

  GET  /connectors                 ["NAME", ...]
  PUT  /connectors/NAME/config     store the config, (re)start the launcher
                                   with it; 201 when new, 200 when updated
  GET  /connectors/NAME/status     RUNNING once the connector reads the
                                   binlog (the launcher's --ready-file),
                                   UNASSIGNED while it starts, FAILED when
                                   the JVM exited

The worker's settings come from the environment, as in Debezium's image:
BOOTSTRAP_SERVERS, OFFSET_FLUSH_INTERVAL_MS, and every CONNECT_FOO_BAR as
foo.bar (e.g. CONNECT_CONFIG_PROVIDERS=env). Offsets go to a file in
/kafka/data (standalone mode), so a restarted container resumes.

Standing in for Debezium's MariaDB connector (not in the wheel), the launcher
runs its MySQL connector: `--set connector.class=...MySqlConnector`, the one
key besides hosts that the launcher lets a deployment change.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA = "/kafka/data"
WORKER = os.path.join(DATA, "worker.properties")
STAND_IN_CLASS = "io.debezium.connector.mysql.MySqlConnector"
PRODUCTION_CLASS = "io.debezium.connector.mariadb.MariaDbConnector"
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def log(msg):
    print(f"connect-rest: {msg}", file=sys.stderr, flush=True)


def write_worker():
    props = {
        "bootstrap.servers": os.environ.get("BOOTSTRAP_SERVERS", "kafka:9092"),
        "plugin.discovery": "service_load",
        "offset.storage.file.filename": os.path.join(DATA, "connect.offsets"),
        "offset.flush.interval.ms": os.environ.get("OFFSET_FLUSH_INTERVAL_MS", "60000"),
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
    }
    for key, value in os.environ.items():
        if key.startswith("CONNECT_"):
            props[key[len("CONNECT_"):].lower().replace("_", ".")] = value
    with open(WORKER + ".tmp", "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in sorted(props.items()))
    os.replace(WORKER + ".tmp", WORKER)


class Connector:
    """One connector = one launcher JVM."""

    def __init__(self, name, config):
        self.name = name
        self.config = config
        self.proc = None
        self.ready = os.path.join(DATA, f"{name}.ready")
        self.file = os.path.join(DATA, f"{name}.json")

    def start(self):
        with open(self.file + ".tmp", "w") as f:
            json.dump(self.config, f, indent=2)
        os.replace(self.file + ".tmp", self.file)
        try:
            os.remove(self.ready)
        except FileNotFoundError:
            pass
        cmd = [
            "java", "-Xmx128m", "-XX:+UseSerialGC",
            "-Dlog4j2.configurationFile=/kafka/log4j2.properties",
            "-cp", "/kafka/classes:/kafka/libs/*", "OutboxConnect",
            "--worker", WORKER, "--connector", self.file, "--name", self.name,
            "--ready-file", self.ready,
        ]
        if self.config.get("connector.class") == PRODUCTION_CLASS:
            cmd += ["--set", f"connector.class={STAND_IN_CLASS}"]
        log(f"starting {self.name} ({' '.join(cmd[cmd.index('OutboxConnect'):])})")
        self.proc = subprocess.Popen(cmd)

    def stop(self, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # A JVM that failed to start may ignore SIGTERM.
                self.proc.kill()
                self.proc.wait()

    def state(self):
        if self.proc is None:
            return "UNASSIGNED"
        if self.proc.poll() is not None:
            return "FAILED"
        return "RUNNING" if os.path.exists(self.ready) else "UNASSIGNED"


connectors = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        log(fmt % args)

    def reply(self, code, body):
        # Compact, as Connect answers.
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def parts(self):
        return [p for p in self.path.split("?", 1)[0].split("/") if p]

    def do_GET(self):
        p = self.parts()
        with lock:
            if p == ["connectors"]:
                return self.reply(200, sorted(connectors))
            if len(p) == 3 and p[0] == "connectors" and p[2] == "status" and p[1] in connectors:
                state = connectors[p[1]].state()
                return self.reply(200, {
                    "name": p[1],
                    "connector": {"state": state, "worker_id": "local"},
                    "tasks": [{"id": 0, "state": state, "worker_id": "local"}],
                    "type": "source",
                })
            if len(p) == 3 and p[0] == "connectors" and p[2] == "config" and p[1] in connectors:
                return self.reply(200, connectors[p[1]].config)
        self.reply(404, {"error_code": 404, "message": f"not found: {self.path}"})

    def do_PUT(self):
        p = self.parts()
        if not (len(p) == 3 and p[0] == "connectors" and p[2] == "config" and NAME_RE.match(p[1])):
            return self.reply(404, {"error_code": 404, "message": f"not found: {self.path}"})
        try:
            config = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
                raise ValueError("a flat object of strings")
        except ValueError as error:
            return self.reply(400, {"error_code": 400, "message": f"bad config: {error}"})
        name = p[1]
        with lock:
            old = connectors.get(name)
            if old and old.config == config and old.state() != "FAILED":
                return self.reply(200, {"name": name, "config": config, "tasks": [], "type": "source"})
            if old:
                old.stop()
            connectors[name] = Connector(name, config)
            connectors[name].start()
        self.reply(200 if old else 201, {"name": name, "config": config, "tasks": [], "type": "source"})


def main():
    os.makedirs(DATA, exist_ok=True)
    write_worker()
    # A restarted container resumes the connectors it had (like Connect's
    # config topic), from the offsets file.
    for entry in sorted(os.listdir(DATA)):
        if entry.endswith(".json"):
            name = entry[: -len(".json")]
            with open(os.path.join(DATA, entry)) as f:
                connectors[name] = Connector(name, json.load(f))
            connectors[name].start()
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("REST_PORT", "8083"))), Handler)

    def shutdown(signum, frame):
        log(f"signal {signum}: stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    log("listening on :8083")
    server.serve_forever()
    with lock:
        for c in connectors.values():
            c.stop()
    time.sleep(0.1)


if __name__ == "__main__":
    main()
