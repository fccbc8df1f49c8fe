"""Starts and stops `dagster dev` for the browser test, and talks to its GraphQL endpoint.

`linkage-pipeline ui` restores the default SIGINT handler and execs `dagster dev` (a background process
started from a non-interactive shell inherits SIGINT as ignored, and `dagster dev` then ignores SIGTERM too).
The server runs in its own session, so every process it spawns (webserver, daemon, code servers, runs) can be
found and, if SIGTERM did not stop them, killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, session id) for every live (non-zombie) process, read from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        table[int(entry)] = (int(fields[1]), int(fields[3]))
    return table


def descendants(root: int) -> set[int]:
    """The live processes of root's session plus every live descendant of root (they may start new sessions)."""
    table = _proc_table()
    found = {pid for pid, (_, sid) in table.items() if sid == root}
    if root in table:
        found.add(root)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found


def alive(pids: set[int]) -> set[int]:
    table = _proc_table()
    return {p for p in pids if p in table}


@dataclass
class DagsterDev:
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read())
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def wait_ready(self, timeout: float) -> None:
        """Polls /server_info, then waits until the code location has loaded."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"dagster dev exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"dagster dev did not answer /server_info within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.5)
        query = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name
                     locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        while True:
            entries = self.graphql(query)["workspaceOrError"].get("locationEntries") or []
            states = [e["locationOrLoadError"] for e in entries]
            if states and all(s and s["__typename"] == "RepositoryLocation" for s in states):
                return
            errors = [s for s in states if s and s["__typename"] == "PythonError"]
            if errors:
                raise AssertionError(f"code location failed to load: {errors[0]['message']}")
            if time.monotonic() > deadline:
                raise AssertionError(f"code location did not load within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self, timeout: float = 20) -> tuple[bool, set[int]]:
        """SIGTERM, then SIGKILL of whatever is left after `timeout`. Returns (stopped by SIGTERM, leftovers)."""
        pids = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.poll()
            pids |= descendants(self.proc.pid) if self.proc.returncode is None else set()
            if self.proc.returncode is not None and not alive(pids):
                return True, set()
            time.sleep(0.2)
        left = alive(pids | descendants(self.proc.pid))
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5)
        return False, alive(left)


def start_dagster_dev(data_dir: Path, dagster_home: Path, log_path: Path) -> DagsterDev:
    """Starts `linkage-pipeline ui --data-dir data_dir --port <free>` in a new session."""
    port = free_port()
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home), LP_DATA_DIR=str(data_dir), DAGSTER_DISABLE_TELEMETRY="1")
    env.pop("LP_DUCKDB_PATH", None)
    env.pop("LP_ARTIFACT_DIR", None)
    cli = [sys.executable, "-c", "import sys; from assets_defs.cli import main; sys.exit(main())"]
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [*cli, "ui", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return DagsterDev(port=port, proc=proc, log_path=log_path)
