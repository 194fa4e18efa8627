"""A real Prometheus server on loopback (built by hack/tools.sh from the module promtool is
pinned by), scraping a gauge the test sets, with a rule whose alert fires while it is > 0."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.helpers import wait_for
from tests.operator_harness import free_port

ALERT = "PatchwardenTestTrouble"
RULES = f"""groups:
  - name: test
    interval: 1s
    rules:
      - alert: {ALERT}
        expr: patchwarden_test_trouble > 0
        labels:
          severity: critical
"""


@dataclass
class Prometheus:
    url: str
    trouble: Gauge
    log: Path
    proc: subprocess.Popen[bytes]

    def query(self, promql: str) -> list[dict[str, str]]:
        qs = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=5) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return [item["metric"] for item in body["data"]["result"]]

    def firing(self, namespace: str) -> bool:
        return bool(
            self.query(f'ALERTS{{alertname="{ALERT}",alertstate="firing",namespace="{namespace}"}}')
        )

    def set_trouble(self, namespace: str, value: float, *, timeout: float = 30) -> float:
        """Set the gauge and wait until the alert fires (value > 0) or clears; returns the
        monotonic time Prometheus first said so."""
        self.trouble.labels(namespace).set(value)
        want = value > 0
        wait_for(
            lambda: self.firing(namespace) == want or None,
            timeout=timeout,
            what=f"{ALERT} in {namespace} to {'fire' if want else 'clear'}",
            interval=0.1,
        )
        return time.monotonic()


@contextmanager
def prometheus(tools: Path, tmp: Path) -> Iterator[Prometheus]:
    registry = CollectorRegistry()
    trouble = Gauge(
        "patchwarden_test_trouble", "Set by the test.", ["namespace"], registry=registry
    )
    exporter_port = free_port()
    server, thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "rules.yml").write_text(RULES)
    (tmp / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(tmp / "rules.yml")],
                "scrape_configs": [
                    {
                        "job_name": "test",
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                    }
                ],
            }
        )
    )
    log = tmp / "prometheus.log"
    proc = subprocess.Popen(
        [
            str(tools / "prometheus"),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        wait_for(ready, timeout=60, what="Prometheus to be ready")
        yield Prometheus(url, trouble, log, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        _stop(server)
        thread.join(timeout=5)


def _stop(server: WSGIServer) -> None:
    server.shutdown()
    server.server_close()
