"""Log records as one JSON object per line (`run --log-format json`), and secret redaction.

Keys: `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `msg`, `site` when the message
carries `site=<name>`, and `exc` for a traceback. Whatever the format, PEM private keys and
values of secret-looking flags never reach the output, even if a message quotes them by mistake.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_PRIVATE_KEY = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
)
_SECRET_FLAG = re.compile(r"(--eab-hmac-key[= ]|hmac_key[\"']?\s*[:=]\s*[\"']?)([^\s\"',}]+)")
_SITE = re.compile(r"\bsite=([a-z0-9][a-z0-9._-]*)")


def redact(text: str) -> str:
    """`text` with private keys and secret flag values replaced by markers."""
    if "PRIVATE KEY" in text:
        text = _PRIVATE_KEY.sub("[redacted private key]", text)
    if "hmac" in text:
        text = _SECRET_FLAG.sub(r"\1***", text)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that redacts the rendered message (for the text format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        ts = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, object] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": message,
        }
        site = getattr(record, "site", None)
        if site is None and (m := _SITE.search(message)):
            site = m.group(1)
        if site is not None:
            out["site"] = site
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)
