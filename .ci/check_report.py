"""CI: the report folder of the README's first command is complete, and ``hysafe serve --demo``
on it answers ``/health``.

Usage: ``VENV/bin/python .ci/check_report.py REPORT`` with the venv of that command (plus the
``serve`` extra). Exits non-zero naming what is missing or what the service answered.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hysafe.demo.report import missing_report_files

HEALTH_TIMEOUT_S = 300  # the service loads three models (and builds no index: the demo wrote them)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(url: str, server: subprocess.Popen) -> dict:
    deadline = time.time() + HEALTH_TIMEOUT_S
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"hysafe serve exited with {server.returncode} before answering /health")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            time.sleep(1)
    raise SystemExit(f"hysafe serve did not answer {url} within {HEALTH_TIMEOUT_S} s")


def main(report: Path) -> int:
    missing = missing_report_files(report)
    if missing:
        print(f"{report}: incomplete report, missing {missing}", file=sys.stderr)
        return 1
    port = _free_port()
    hysafe = Path(sys.executable).parent / "hysafe"
    server = subprocess.Popen([str(hysafe), "serve", "--demo", str(report), "--port", str(port)])
    try:
        health = _health(f"http://127.0.0.1:{port}/health", server)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{report}: complete; /health answered {health}")
    return 0 if health.get("status") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
