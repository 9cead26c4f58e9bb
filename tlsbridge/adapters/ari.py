"""RFC 9773 renewalInfo client: fetch the CA's suggested window for a certificate. No decisions.

Uses the standard library's HTTP client (no certbot/acme import: this runs on every pass that
needs a fresh window, and must stay cheap). Every request has a timeout and is retried with
backoff on network errors.
"""

from __future__ import annotations

import email.utils
import json
import re
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tlsbridge.errors import AriError
from tlsbridge.model import AriWindow
from tlsbridge.retry import retry

DEFAULT_RETRY_AFTER = timedelta(hours=6)
MAX_RETRY_AFTER = timedelta(days=1)
MIN_RETRY_AFTER = timedelta(minutes=1)


class _Transient(Exception):
    """A network error or a 5xx/429 answer: worth another try."""


class AriClient:
    def __init__(self, directory_url: str, ca_bundle: Path | None = None, timeout: float = 10.0) -> None:
        self.directory_url = directory_url
        self.timeout = timeout
        self._ctx = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        self._renewal_info_url: str | None = None
        self._looked_up = False

    def _get(self, url: str) -> tuple[bytes, dict[str, str]]:
        def once() -> tuple[bytes, dict[str, str]]:
            req = urllib.request.Request(url, headers={"User-Agent": "tlsbridge"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout, context=self._ctx) as resp:
                    return resp.read(), {k.lower(): v for k, v in resp.headers.items()}
            except urllib.error.HTTPError as exc:
                if exc.code >= 500 or exc.code == 429:
                    raise _Transient(f"HTTP {exc.code}") from exc
                raise AriError(f"GET {url}: HTTP {exc.code}") from exc  # a 4xx will not get better
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                raise _Transient(str(exc)) from exc

        try:
            return retry(once, on=(_Transient,), attempts=3, what=f"GET {url}")
        except _Transient as exc:
            raise AriError(f"GET {url}: {exc}") from exc

    def renewal_info_url(self) -> str | None:
        """The directory's renewalInfo URL, or None when the CA offers no ARI."""
        if not self._looked_up:
            body, _ = self._get(self.directory_url)
            try:
                url = json.loads(body).get("renewalInfo")
            except (ValueError, AttributeError) as exc:
                raise AriError(f"{self.directory_url}: not an ACME directory") from exc
            self._renewal_info_url = url if isinstance(url, str) else None
            self._looked_up = True
        return self._renewal_info_url

    def window(self, cert_id: str, now: datetime) -> AriWindow | None:
        """The suggested window for the certificate with RFC 9773 identifier `cert_id`."""
        base = self.renewal_info_url()
        if base is None:
            return None
        body, headers = self._get(f"{base.rstrip('/')}/{cert_id}")
        try:
            data = json.loads(body)
            start = parse_time(data["suggestedWindow"]["start"])
            end = parse_time(data["suggestedWindow"]["end"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AriError(f"renewalInfo for {cert_id}: malformed response") from exc
        if end < start:
            raise AriError(f"renewalInfo for {cert_id}: window ends before it starts")
        return AriWindow(
            start=start,
            end=end,
            retry_after=now + retry_after(headers.get("retry-after"), now),
            explanation_url=data.get("explanationURL"),
        )


def parse_time(text: str) -> datetime:
    """RFC 3339 with any number of fractional digits, as UTC."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def retry_after(header: str | None, now: datetime) -> timedelta:
    """Retry-After (seconds or HTTP-date), clamped to [1 min, 1 day]; 6 h when absent."""
    if not header:
        return DEFAULT_RETRY_AFTER
    header = header.strip()
    if header.isdigit():
        delta = timedelta(seconds=int(header))
    else:
        try:
            delta = email.utils.parsedate_to_datetime(header) - now
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER
    return min(max(delta, MIN_RETRY_AFTER), MAX_RETRY_AFTER)
