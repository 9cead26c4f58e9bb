"""The sidecar's passes with work to do run in a short-lived child process.

A pass that finds nothing due runs in the sidecar itself (milliseconds, local files only). As
soon as a pass must do something (issue, publish, deliver) or meets a certificate it has not
parsed yet, it is started again in a child: `python -m tlsbridge.sidecar.worker FD`, which gets
the config and the sites on stdin, logs to the same stdout in the same format, runs the real
pass, saves the certificate memo, and sends back the outcomes (small dataclasses) on pipe FD.
What issuing and delivering load (`cryptography`, the docker SDK, requests, urllib3: ~20 MiB
of resident memory) dies with the child; the sidecar reloads the memo and keeps ~35 MiB.

Signals: SIGTERM/SIGINT to the sidecar while a child runs end the child the same way (it stops
its certbot: adapters/certbot.py); the child exits with the sidecar's pass abandoned.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tlsbridge.adapters.certmemo import CertMemo, ParseRefused, memo_file
from tlsbridge.clock import Clock
from tlsbridge.config import Config, Site
from tlsbridge.errors import TlsbridgeError
from tlsbridge.model import DeliveryReport, ObservedCert
from tlsbridge.reconcile import Reconciler, SiteOutcome

logger = logging.getLogger(__name__)

STOP_WAIT = 15.0  # seconds a child gets to stop its certbot after SIGTERM


class WorkerError(TlsbridgeError):
    """The child that runs a pass failed (crashed, or was killed)."""


class _Delegate(Exception):  # noqa: N818 - control flow, not an error
    """The in-process pass reached work that the child does."""


@dataclass
class Job:
    """What the child needs (pickled on its stdin)."""

    cfg: Config
    names: list[str] | None
    force: bool
    log_format: str  # "text" | "json"
    log_level: int
    log_stderr: bool = False  # the sidecar logs to stdout; elsewhere (tests) maybe to stderr
    fake_now: str | None = None  # the sidecar's clock, when it is not the real time (tests)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    outcomes: list[SiteOutcome]
    reloaded: list[dict[str, tuple[str, ...]]]  # each delivery's containers reloaded, per site


class SidecarReconciler(Reconciler):
    """Reconciler whose passes leave the sidecar's memory as they found it (see the module)."""

    on_delivered: Callable[[DeliveryReport], None] | None = None  # the sidecar counts reloads

    def run_pass(self, names: Iterable[str] | None = None, *, force: bool = False,
                 dry_run: bool = False) -> list[SiteOutcome]:
        wanted = list(names) if names is not None else None
        if dry_run:
            return super().run_pass(wanted, force=force, dry_run=True)
        memo = self.ports.memo
        try:
            with memo.refusing_parse():
                return super().run_pass(wanted, force=force)
        except (_Delegate, ParseRefused) as why:
            logger.debug("run: the pass continues in a worker process (%s)",
                         "a certificate to parse" if isinstance(why, ParseRefused) else "work to do")
        result = run_child(self.cfg, wanted, force, self.clock)
        memo.load(memo_file(self.cfg.state.dir), again=True)  # what the child parsed
        if self.on_delivered is not None:
            for reloaded in result.reloaded:
                self.on_delivered(DeliveryReport(reloaded=reloaded))
        return result.outcomes

    def _bootstrap(self, sites: list[tuple[Site, ObservedCert | None]]) -> Mapping[str, TlsbridgeError]:
        if sites:
            raise _Delegate()
        return {}

    def apply(self, site: Site, sp: Any, outcome: SiteOutcome) -> None:
        raise _Delegate()


def build_reconciler(cfg: Config, clock: Clock, memo: CertMemo,
                     on_delivered: Callable[[DeliveryReport], None] | None = None) -> SidecarReconciler:
    """The sidecar's reconciler (loop.BuildReconciler): the real adapters, and `on_delivered`
    told what the children's deliveries reloaded."""
    from tlsbridge.wiring import LazyAri, LazyCertbot, LazyDeliverer, build_ports

    rec = SidecarReconciler(cfg, clock, build_ports(cfg, memo), obtainer=LazyCertbot(cfg),
                            ari=LazyAri(cfg), deliverer=LazyDeliverer(cfg))
    rec.on_delivered = on_delivered
    return rec


def run_child(cfg: Config, names: list[str] | None, force: bool, clock: Clock) -> Result:
    fmt, level, to_stderr = _log_settings()
    fake = None
    if os.environ.get("TLSBRIDGE_FAKE_NOW") or os.environ.get("TLSBRIDGE_FAKE_RATE"):
        fake = clock.now().isoformat()
    job = Job(cfg, names, force, fmt, level, to_stderr, fake)
    env = dict(os.environ)
    if fake:
        env["TLSBRIDGE_FAKE_NOW"] = fake
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tlsbridge.sidecar.worker", str(write_fd)],
                                stdin=subprocess.PIPE, pass_fds=(write_fd,), env=env)
    finally:
        os.close(write_fd)
    try:
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(pickle.dumps(job))
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
        rc = proc.wait()
    except BaseException:  # interrupted (SIGTERM, a pass abandoned): end the child, and its certbot
        _stop(proc)
        raise
    if rc != 0 or not data:
        raise WorkerError(f"the worker process of the pass exited {rc} without a result "
                          "(its error is in the log above)")
    result = pickle.loads(data)  # noqa: S301 - our own child, over a private pipe
    assert isinstance(result, Result)
    return result


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _log_settings() -> tuple[str, int, bool]:
    """The sidecar's log format, level and stream, for the child to log alike."""
    handlers = logging.getLogger().handlers
    first = handlers[0] if handlers else None
    fmt = "json" if first is not None and type(first.formatter).__name__ == "JsonFormatter" else "text"
    to_stderr = getattr(first, "stream", None) is sys.stderr
    return fmt, logging.getLogger("tlsbridge").getEffectiveLevel(), to_stderr


def child_main(result_fd: int) -> int:
    """The child: read a Job on stdin, run the pass, write a Result to `result_fd`."""
    job = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - from our parent
    assert isinstance(job, Job)
    from tlsbridge.cli import setup_logging
    from tlsbridge.clock import clock_from_env
    from tlsbridge.sidecar.logjson import RedactingFilter
    from tlsbridge.status import collect
    from tlsbridge.wiring import build_ports
    from tlsbridge.wiring import build_reconciler as build

    # SIGTERM from the sidecar: unwind, so the certbot adapter stops certbot on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    setup_logging(False, False, fmt=job.log_format, stream=sys.stderr if job.log_stderr else sys.stdout)
    logging.getLogger("tlsbridge").setLevel(job.log_level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    memo = CertMemo()
    reloaded: list[dict[str, tuple[str, ...]]] = []
    rec = build(job.cfg, clock_from_env(), memo,
                on_delivered=lambda report: reloaded.append(dict(report.reloaded)))
    outcomes = rec.run_pass(job.names, force=job.force)
    # Parse here what the sidecar reads next (its refresh and status page: the published files too).
    try:
        collect(job.cfg, build_ports(job.cfg, memo), rec.clock.now())
    except (TlsbridgeError, ValueError) as exc:  # the sidecar's refresh reports it, in its turn
        logger.debug("worker: cannot read every site's status: %s", exc)
    memo.save(memo_file(job.cfg.state.dir))
    with os.fdopen(result_fd, "wb") as out:
        out.write(pickle.dumps(Result(outcomes, reloaded)))
    return 0


if __name__ == "__main__":
    # Through the importable module, so that what is pickled names tlsbridge.sidecar.worker.
    from tlsbridge.sidecar.worker import child_main as _main

    sys.exit(_main(int(sys.argv[1])))
