"""A tlsbridge deployment in a temp folder: writes a config, runs the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from servers import PebbleServer

TLSBRIDGE = str(Path(sys.executable).with_name("tlsbridge"))


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class TbEnv:
    root: Path
    pebble: PebbleServer
    sites: dict[str, dict[str, Any]]
    challenge: dict[str, Any] = field(default_factory=dict)
    acme: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    docker_engine: bool = True  # False: point docker.host at nothing

    @property
    def config_path(self) -> Path:
        return self.root / "tlsbridge.yaml"

    @property
    def publish_dir(self) -> Path:
        return self.root / "certs"

    @property
    def config_dir(self) -> Path:
        return self.root / "letsencrypt"

    def write(self) -> Path:
        doc: dict[str, Any] = {
            "acme": {"directory": self.pebble.directory_url, "email": "admin@example.com",
                     "ca_bundle": str(self.pebble.ca_bundle), **self.acme},
            "certbot": {"config_dir": str(self.config_dir), "work_dir": str(self.root / "work"),
                        "logs_dir": str(self.root / "logs"), "timeout": "2m"},
            "challenge": {"method": "standalone", "http_port": self.pebble.http_01_port, **self.challenge},
            "publish": {"dir": str(self.publish_dir)},
            "state": {"dir": str(self.root / "state")},
            "sites": self.sites,
            **self.extra,
        }
        if not self.docker_engine:
            # No engine: other tests' containers labelled tlsbridge.site=<name> must not become
            # targets of these sites (foundation tests; delivery has its own).
            doc["docker"] = {"host": f"unix://{self.root}/no-docker.sock"}
        self.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.config_path

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Run:
        self.write()
        full_env = {**os.environ, "TLSBRIDGE_RETRY_SCALE": "0", **(env or {})}
        proc = subprocess.run([TLSBRIDGE, "-c", str(self.config_path), *args], capture_output=True,
                              text=True, env=full_env, timeout=timeout)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def status(self, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        r = self.run("status", "--json", env=env)
        assert r.returncode == 0, r.stderr
        return {row["name"]: row for row in json.loads(r.stdout)}

    def published(self, site: str, name: str = "cert.pem") -> bytes:
        return (self.publish_dir / site / name).read_bytes()

    def lineage(self, site: str, name: str = "cert.pem") -> bytes:
        return (self.config_dir / "live" / site / name).read_bytes()

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """(mtime_ns, size) of every file tlsbridge or certbot manages."""
        out = {}
        for base in (self.publish_dir, self.config_dir, self.root / "state"):
            for p in base.rglob("*"):
                st = p.lstat()
                out[str(p)] = (st.st_mtime_ns, st.st_size)
        return out
