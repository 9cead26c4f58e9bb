"""YAML -> the typed, frozen values of tlsbridge.config.model. Every error names the file,
the key path and the problem.

Loading never writes anything. Strings may use ${VAR} / ${VAR:-default} to take values from the
environment (for secrets such as the EAB HMAC key); the interpolated values are never echoed back
in error messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from tlsbridge import names
from tlsbridge.config.model import (
    CHALLENGE_KEYS,
    DEFAULT_SOURCE,
    DIRECTORY_ALIASES,
    KEY_TYPES,
    METHODS,
    AcmeConfig,
    CaConfig,
    CertbotConfig,
    ChallengeConfig,
    Config,
    DaemonTlsConfig,
    DiscoveryConfig,
    DockerConfig,
    Eab,
    PublishConfig,
    ReloadTarget,
    RenewalConfig,
    Site,
    StateConfig,
)
from tlsbridge.notify import settings as notify_settings


def default_config_path() -> Path:
    return Path(os.environ.get("TLSBRIDGE_CONFIG") or DEFAULT_SOURCE)


def load(path: Path) -> Config:
    """Read and validate a config file. Raises ConfigError (one line: file, key path, problem)."""
    from tlsbridge.adapters import yamlfile

    return parse(yamlfile.read_text(path), source=str(path), base=path.resolve().parent)


def parse(text: str, source: str = DEFAULT_SOURCE, base: Path | None = None) -> Config:
    """Parse YAML text into a Config; relative paths are taken from `base` (the file's folder)."""
    from tlsbridge.adapters import yamlfile

    return _Parser(source, base or Path.cwd()).config(yamlfile.parse(text, source))


class _Parser(names.Reader):
    """The sections of the config, read with the primitives of names.Reader."""

    # -- sections -----------------------------------------------------------------------------
    def config(self, raw: Any) -> Config:
        top = self.mapping(
            raw,
            "",
            ("acme", "certbot", "challenge", "publish", "state", "renewal", "docker", "sites",
             "daemon_tls", "notify", "discovery"),
        )
        challenge = self.challenge(top.get("challenge"))
        top_challenge = self.mapping(top.get("challenge"), "challenge", CHALLENGE_KEYS)
        sites = self.sites(top.get("sites"), challenge, top_challenge)
        daemon_tls = self.daemon_tls(top.get("daemon_tls"), sites)
        return Config(
            source=self.source,
            acme=self.acme(top.get("acme")),
            certbot=self.certbot(top.get("certbot")),
            challenge=challenge,
            publish=self.publish(top.get("publish")),
            state=self.state(top.get("state")),
            renewal=self.renewal(top.get("renewal")),
            docker=self.docker(top.get("docker")),
            sites=sites,
            daemon_tls=daemon_tls,
            notify=notify_settings.parse(self, top.get("notify")),
            discovery=self.discovery(top.get("discovery")),
        )

    def discovery(self, raw: Any) -> DiscoveryConfig:
        m, d = self.mapping(raw, "discovery", ("enabled", "grace", "dir")), DiscoveryConfig()
        grace = self.duration(m["grace"], "discovery.grace") if "grace" in m else d.grace
        if grace < timedelta(0):
            self.error("discovery.grace", "must be a duration of 0s or more")
        return DiscoveryConfig(enabled=self.boolean(m.get("enabled", False), "discovery.enabled"),
                               grace=grace, dir=self.req_path(m.get("dir", str(d.dir)), "discovery.dir"))

    def state(self, raw: Any) -> StateConfig:
        m = self.mapping(raw, "state", ("dir",))
        return StateConfig(dir=self.req_path(m.get("dir", str(StateConfig().dir)), "state.dir"))

    def acme(self, raw: Any) -> AcmeConfig:
        m = self.mapping(raw, "acme", ("directory", "email", "ca_bundle", "key_type", "profile", "eab",
                                       "fallback"))
        primary = self.ca(m, "acme", None)
        ca_bundle = self.path(m.get("ca_bundle"), "acme.ca_bundle", optional=True)
        if ca_bundle is not None and not ca_bundle.is_file():
            self.error("acme.ca_bundle", f"{ca_bundle} is not a readable file")
        key_type = self.string(m.get("key_type", "ecdsa"), "acme.key_type") or ""
        if key_type not in KEY_TYPES:
            self.error("acme.key_type", f"{key_type!r} is not one of {', '.join(KEY_TYPES)}")
        profile = self.string(m.get("profile"), "acme.profile", optional=True)
        if profile is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", profile):
            self.error("acme.profile", "a profile name is letters, digits, '.', '_' or '-'")
        if not isinstance(raw_fb := m.get("fallback") or [], list):
            self.error("acme.fallback", f"expected a list of {{directory, email, eab}}, got {names.kind(raw_fb)}")
        fallback = tuple(self.ca(self.mapping(e, f"acme.fallback[{i}]", ("directory", "email", "eab")),
                                 f"acme.fallback[{i}]", primary) for i, e in enumerate(raw_fb))
        for i, ca in enumerate(fallback):
            if ca.directory in [c.directory for c in (primary, *fallback[:i])]:
                self.error(f"acme.fallback[{i}].directory", f"{ca.directory} is already listed")
        return AcmeConfig(directory=primary.directory, email=primary.email, ca_bundle=ca_bundle,
                          key_type=key_type, profile=profile, eab=primary.eab, fallback=fallback)

    def ca(self, m: Mapping[str, Any], key: str, primary: CaConfig | None) -> CaConfig:
        """One CA's directory, email and eab (acme, or a fallback: its email defaults to the primary's)."""
        if primary is not None and "directory" not in m:
            self.error(f"{key}.directory", "is required (an ACME directory URL)")
        directory = self.string(m.get("directory", "letsencrypt"), f"{key}.directory") or ""
        directory = DIRECTORY_ALIASES.get(directory, directory)
        if not re.match(r"^https?://[^/\s]+", directory):
            self.error(f"{key}.directory", "expected letsencrypt, letsencrypt-staging or an http(s):// URL")
        email = self.string(m["email"], f"{key}.email", optional=True) if "email" in m else (
            primary.email if primary else None)
        if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            self.error(f"{key}.email", "not an e-mail address")
        eab = None
        if m.get("eab") is not None:
            e = self.mapping(m["eab"], f"{key}.eab", ("kid", "hmac_key"))
            if missing := [k for k in ("kid", "hmac_key") if k not in e]:
                self.error(f"{key}.eab.{missing[0]}", f"is required when {key}.eab is set")
            eab = Eab(kid=self.string(e["kid"], f"{key}.eab.kid") or "",
                      hmac_key=self.string(e["hmac_key"], f"{key}.eab.hmac_key") or "")
        return CaConfig(directory=directory, email=email, eab=eab)

    def certbot(self, raw: Any) -> CertbotConfig:
        m = self.mapping(raw, "certbot", ("config_dir", "work_dir", "logs_dir", "timeout"))
        d = CertbotConfig()
        timeout = self.duration(m["timeout"], "certbot.timeout") if "timeout" in m else d.timeout
        if timeout.total_seconds() < 10:
            self.error("certbot.timeout", "must be at least 10s")
        return CertbotConfig(
            config_dir=self.req_path(m.get("config_dir", str(d.config_dir)), "certbot.config_dir"),
            work_dir=self.req_path(m.get("work_dir", str(d.work_dir)), "certbot.work_dir"),
            logs_dir=self.req_path(m.get("logs_dir", str(d.logs_dir)), "certbot.logs_dir"),
            timeout=timeout,
        )

    def challenge(self, raw: Any, site: str | None = None,
                  top: Mapping[str, Any] | None = None) -> ChallengeConfig:
        """The top-level block (site None), or a site's block over the top-level one, key by key.

        Each error names where the value came from: challenge.KEY or sites.NAME.challenge.KEY.
        """
        where = f"sites.{site}.challenge" if site is not None else "challenge"
        own = self.mapping(raw, where, CHALLENGE_KEYS)
        values: dict[str, tuple[Any, str]] = {k: (v, f"challenge.{k}") for k, v in (top or {}).items()}
        values.update((k, (v, f"{where}.{k}")) for k, v in own.items())
        d = ChallengeConfig()

        def get(key: str, default: Any = None) -> tuple[Any, str]:
            return values.get(key, (default, f"{where}.{key}"))

        value, key = get("method", d.method)
        method = self.string(value, key) or ""
        if method not in METHODS:
            self.error(key, f"{method!r} is not one of {', '.join(METHODS)}")
        value, key = get("dns_plugin")
        plugin = self.string(value, key, optional=True)
        if method == "dns" and plugin is None:
            self.error(key, "is required with method dns (a certbot DNS plugin, e.g. cloudflare)")
        if plugin is not None and not re.fullmatch(r"[a-z0-9-]+", plugin):
            self.error(key, "a certbot DNS plugin name, e.g. cloudflare or rfc2136")
        value, key = get("dns_propagation")
        propagation = None if value is None else self.duration(value, key)
        return ChallengeConfig(
            method=method,
            webroot=self.req_path(*get("webroot", str(d.webroot))),
            http_port=self.integer(*get("http_port", d.http_port), 1, 65535),
            dns_plugin=plugin,
            dns_credentials=self.path(*get("dns_credentials"), optional=True),
            dns_propagation=propagation,
        )

    def publish(self, raw: Any) -> PublishConfig:
        m = self.mapping(raw, "publish", ("dir", "owner", "group", "key_mode", "cert_mode", "keep"))
        d = PublishConfig()
        key_mode = self.mode(m["key_mode"], "publish.key_mode") if "key_mode" in m else d.key_mode
        if key_mode & 0o004:
            self.error("publish.key_mode", "private keys must never be world-readable")
        folder = self.req_path(m.get("dir", str(d.dir)), "publish.dir")
        if folder.exists() and not folder.is_dir():
            self.error("publish.dir", f"{folder} exists and is not a folder")
        return PublishConfig(
            dir=folder,
            owner=self.check("publish.owner", names.user, self.string(m.get("owner"), "publish.owner", optional=True)),
            group=self.check("publish.group", names.group, self.string(m.get("group"), "publish.group", optional=True)),
            key_mode=key_mode,
            cert_mode=self.mode(m["cert_mode"], "publish.cert_mode") if "cert_mode" in m else d.cert_mode,
            keep=self.integer(m.get("keep", d.keep), "publish.keep", 1, 100),
        )

    def renewal(self, raw: Any) -> RenewalConfig:
        m = self.mapping(raw, "renewal", ("before_expiry", "check_interval", "jitter"))
        d = RenewalConfig()
        before = m.get("before_expiry", "auto")
        before_expiry = None if before == "auto" else self.duration(before, "renewal.before_expiry")
        if before_expiry is not None and before_expiry <= timedelta(0):
            self.error("renewal.before_expiry", "must be auto or a positive duration")
        interval = self.duration(m.get("check_interval", "12h"), "renewal.check_interval")
        if interval < timedelta(minutes=1):
            self.error("renewal.check_interval", "must be at least 1m")
        jitter = self.duration(m["jitter"], "renewal.jitter") if "jitter" in m else d.jitter
        return RenewalConfig(before_expiry=before_expiry, check_interval=interval, jitter=jitter)

    def docker(self, raw: Any) -> DockerConfig:
        m = self.mapping(raw, "docker", ("host", "timeout"))
        host = self.string(m.get("host"), "docker.host", optional=True)
        if host is not None and not re.match(r"^(unix|tcp|ssh|npipe)://", host):
            self.error("docker.host", "expected unix://PATH, tcp://HOST:PORT or ssh://HOST")
        timeout = self.duration(m["timeout"], "docker.timeout") if "timeout" in m else DockerConfig().timeout
        if timeout < timedelta(seconds=1):
            self.error("docker.timeout", "must be at least 1s (each Docker API call gets this long)")
        return DockerConfig(host=host, timeout=timeout)

    def sites(self, raw: Any, challenge: ChallengeConfig, top_challenge: Mapping[str, Any]) -> dict[str, Site]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.error("sites", f"expected a mapping of site name to site, got {names.kind(raw)}")
        sites: dict[str, Site] = {}
        owner: dict[str, str] = {}
        for name, body in raw.items():
            key = f"sites.{name}"
            if not names.is_site_name(name):
                self.error(f"sites[{name!r}]", names.SITE_NAME_RULE)
            site = self.site(name, body, challenge, top_challenge)
            for i, domain in enumerate(site.domains):
                if domain in owner:
                    self.error(f"{key}.domains[{i}]", f"{domain} is already a domain of site {owner[domain]}")
                owner[domain] = name
            sites[name] = site
        return sites

    def site(self, name: str, raw: Any, challenge: ChallengeConfig, top_challenge: Mapping[str, Any]) -> Site:
        key = f"sites.{name}"
        m = self.mapping(raw, key, ("domains", "reload", "verify", "upstream", "hsts", "challenge"))
        overrides: tuple[str, ...] = ()
        if m.get("challenge") is not None:
            overrides = tuple(self.mapping(m["challenge"], f"{key}.challenge", CHALLENGE_KEYS))
            challenge = self.challenge(m["challenge"], name, top_challenge)
        if "domains" not in m:
            self.error(f"{key}.domains", "is required (a list of domain names)")
        given = self.str_list(m["domains"], f"{key}.domains")
        if not given:
            self.error(f"{key}.domains", "needs at least one domain")
        if len(given) > names.MAX_NAMES:
            self.error(f"{key}.domains", f"{len(given)} names: a certificate holds at most {names.MAX_NAMES} "
                                         "(split the site)")
        domains: list[str] = []
        for i, d in enumerate(given):
            dk = f"{key}.domains[{i}]"
            ascii_name = self.domain(d, dk, name, challenge.method)
            if ascii_name in domains:
                self.error(dk, f"{ascii_name} is listed twice")
            domains.append(ascii_name)
        reload = self.reload(m.get("reload"), f"{key}.reload")
        verify = None
        if m.get("verify") is not None:
            verify = self.check(f"{key}.verify", names.host_port, self.string(m["verify"], f"{key}.verify"))
        upstream = self.string(m.get("upstream"), f"{key}.upstream", optional=True)
        if upstream is not None and not re.fullmatch(r"https?://[A-Za-z0-9._\-\[\]:]+(/\S*)?", upstream):
            self.error(f"{key}.upstream", "expected an http(s):// URL, e.g. http://app:8080")
        hsts = self.boolean(m.get("hsts", False), f"{key}.hsts")
        return Site(name=name, domains=tuple(domains), reload=reload, verify=verify,
                    upstream=upstream, hsts=hsts, challenge=challenge, challenge_overrides=overrides)

    def domain(self, text: str, path: str, site: str, method: str) -> str:
        if text.strip().startswith("*.") and method != "dns":
            self.error(path, f"{text!r}: a wildcard needs challenge.method dns, and site {site} "
                                  f"uses {method} (set sites.{site}.challenge.method: dns)")
        try:
            return names.dns_name(text, wildcard=True, dotted=True)
        except ValueError as exc:
            problem = "IP addresses are not supported, use a DNS name" if names.is_ip(text.strip()) else exc
            self.error(path, f"{text!r}: {problem}")

    def reload(self, raw: Any, path: str) -> tuple[ReloadTarget, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.error(path, "expected a list of {container: NAME} or {label: KEY=VALUE}, "
                                  f"got {names.kind(raw)}")
        out = []
        for i, entry in enumerate(raw):
            ek = f"{path}[{i}]"
            m = self.mapping(entry, ek, ("container", "label"))
            if len(m) != 1:
                self.error(ek, "give exactly one of container: NAME or label: KEY=VALUE")
            if "container" in m:
                name = self.string(m["container"], f"{ek}.container") or ""
                if not re.fullmatch(r"/?[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                    self.error(f"{ek}.container", f"{name!r} is not a container name")
                out.append(ReloadTarget(container=name.lstrip("/")))
            else:
                label = self.string(m["label"], f"{ek}.label") or ""
                if not re.fullmatch(r"[^=\s]+=[^\s]*", label):
                    self.error(f"{ek}.label", f"{label!r} is not KEY=VALUE")
                out.append(ReloadTarget(label=label))
        return tuple(out)

    def daemon_tls(self, raw: Any, sites: Mapping[str, Site]) -> DaemonTlsConfig | None:
        if raw is None:
            return None
        key = "daemon_tls"
        m = self.mapping(raw, key, ("out", "hostnames", "ips", "listen", "clients", "merge",
                                    "server_cert_site"))
        if "out" not in m:
            self.error(f"{key}.out", "is required (the folder for daemon.json and the TLS files)")
        hostnames = [self.check(f"{key}.hostnames[{i}]", names.host_name, h)
                     for i, h in enumerate(self.str_list(m.get("hostnames"), f"{key}.hostnames"))]
        ips = [self.check(f"{key}.ips[{i}]", names.ip_address, ip)
               for i, ip in enumerate(self.str_list(m.get("ips"), f"{key}.ips"))]
        listen = self.string(m.get("listen", "0.0.0.0:2376"), f"{key}.listen") or ""
        self.check(f"{key}.listen", names.host_port, listen)
        clients = self.str_list(m.get("clients"), f"{key}.clients")
        for i, c in enumerate(clients):
            if not names.is_client_name(c):
                self.error(f"{key}.clients[{i}]", f"{c!r}: {names.CLIENT_NAME_RULE}")
        site = self.string(m.get("server_cert_site"), f"{key}.server_cert_site", optional=True)
        if site is not None and site not in sites:
            self.error(f"{key}.server_cert_site", f"no site named {site!r} in sites")
        return DaemonTlsConfig(
            out=self.req_path(m["out"], f"{key}.out"),
            hostnames=tuple(hostnames),
            ips=tuple(ips),
            listen=listen,
            clients=tuple(clients),
            merge=self.path(m.get("merge"), f"{key}.merge", optional=True),
            server_cert_site=site,
        )
