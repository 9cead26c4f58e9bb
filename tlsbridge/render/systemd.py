"""The one-shot deployment's systemd units (`tlsbridge systemd`): pure text, no I/O.

The same units as deploy/tlsbridge-renew.{service,timer} (a unit test keeps them in step), with
ExecStart naming a given tlsbridge executable and config file, and the config's writable
folders added to ReadWritePaths= (the unit makes /etc, /usr and home folders read-only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SERVICE = "tlsbridge-renew.service"
TIMER = "tlsbridge-renew.timer"

# What systemd takes literally in ExecStart= and ReadWritePaths=: no whitespace, quotes,
# specifiers (%), variables ($), escapes (\) or separators (;).
_PLAIN = re.compile(r"/[A-Za-z0-9._+@:,=/-]*")


def plain_path_problem(path: str) -> str | None:
    """Why `path` cannot go into a unit file as it is, or None."""
    if not _PLAIN.fullmatch(path):
        return (f"{path!r} is not a plain absolute path systemd takes literally "
                "(letters, digits and ._+@:,=/- only)")
    return None


def render_service(executable: str, config: str, writable: Sequence[str] = ()) -> str:
    """tlsbridge-renew.service running `EXECUTABLE -c CONFIG renew`. Every path must pass
    plain_path_problem (the caller checks)."""
    rw = " ".join(f"-{p}" for p in dict.fromkeys(["/etc/letsencrypt", *writable]))
    return f"""\
# Written by `tlsbridge systemd` for this installation of tlsbridge. One-shot deployment:
# tlsbridge runs on the host, started twice a day by {TIMER}. Each run renews
# what is due (usually nothing: a few milliseconds, no CA contacted), publishes into
# publish.dir, then config-tests, reloads and verifies the nginx containers labelled
# tlsbridge.site=<site> (see `tlsbridge compose`).
#
#   systemctl daemon-reload && systemctl enable --now {TIMER}
#   systemctl start {SERVICE}    # a first run now; logs: journalctl -u tlsbridge-renew
[Unit]
Description=tlsbridge: renew due certificates, publish them, reload and verify nginx
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=oneshot
ExecStart={executable} -c {config} renew
# A backstop above certbot.timeout per site; a run that hangs is killed, the next one retries.
TimeoutStartSec=30min
# Creates /var/lib/tlsbridge and /var/log/tlsbridge (the defaults of state.dir, publish.dir,
# challenge.webroot, certbot.work_dir and certbot.logs_dir).
StateDirectory=tlsbridge
LogsDirectory=tlsbridge
# Hardening that leaves what tlsbridge needs: root (the Docker socket, certbot's tree), the
# network, /var. /usr, /boot, /etc and home folders are read-only except the folders the
# config writes to (below; run `tlsbridge systemd` again after moving them).
ProtectSystem=full
ReadWritePaths={rw}
PrivateTmp=true
NoNewPrivileges=true
ProtectHome=read-only
UMask=0022
"""


def render_timer() -> str:
    return f"""\
# Written by `tlsbridge systemd`. Starts {SERVICE} twice a day, at a random
# moment within an hour of 00:00 and 12:00 (so a fleet does not hit the CA at once), and catches
# up after downtime. Twice a day is what ARI (RFC 9773) asks for; a run with nothing due costs
# milliseconds.
[Unit]
Description=Run tlsbridge renew twice a day

[Timer]
OnCalendar=*-*-* 00,12:00:00
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
"""
