"""The tlsbridge demo (run by scripts/demo.sh, i.e. `make demo`), on this machine only:

1. a local Pebble ACME CA (tests/integration/servers.py's PebbleServer);
2. `tlsbridge compose` writes a compose file and nginx snippets for one site;
3. `docker compose up --no-start` creates the nginx container (it cannot start yet: there is
   no certificate);
4. `tlsbridge renew` publishes a placeholder, starts nginx, gets the certificate from Pebble
   through the webroot that nginx serves on port 80, publishes it, config-tests and reloads
   nginx and verifies what it serves;
5. curl, trusting only Pebble's root, fetches the site over HTTPS; a second `renew` does nothing.

Idempotent: it clears its folder and compose project first, and removes both at the end
unless --keep is given (then nginx keeps running; Pebble stops with the script).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from composekit import TLSBRIDGE, compose_cmd  # noqa: E402
from servers import PebbleServer, free_port  # noqa: E402

PROJECT = "tlsbridge-demo"
SITE = "demo"
DOMAIN = "demo.example.com"
IMAGE = os.environ.get("TLSBRIDGE_NGINX_IMAGE", "tlsbridge-test/nginx:latest")


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def sh(argv: list[str], env: dict[str, str] | None = None, check: bool = True,
       quiet: bool = False) -> subprocess.CompletedProcess[str]:
    shown = " ".join(a if " " not in a else repr(a) for a in argv)
    print(f"$ {shown.replace(str(ROOT) + '/', '')}", flush=True)
    proc = subprocess.run(argv, text=True, capture_output=True, env={**os.environ, **(env or {})},
                          timeout=300)
    if not quiet:
        sys.stdout.write(proc.stdout)
        sys.stdout.write(proc.stderr)
    if check and proc.returncode != 0:
        if quiet:
            sys.stdout.write(proc.stdout + proc.stderr)
        raise SystemExit(f"demo: command failed with exit code {proc.returncode}")
    return proc


def down(workdir: Path, env: dict[str, str]) -> None:
    compose_file = workdir / "compose.yaml"
    if compose_file.exists():
        subprocess.run([*compose_cmd(), "-p", PROJECT, "-f", str(compose_file), "down", "-v",
                        "--remove-orphans", "-t", "2"], capture_output=True, env={**os.environ, **env})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("TLSBRIDGE_DEMO_DIR",
                                                                        "/tmp/tlsbridge-demo")))
    parser.add_argument("--keep", action="store_true", help="leave nginx running at the end")
    args = parser.parse_args()
    workdir: Path = args.dir.resolve()
    t0 = time.monotonic()

    # A previous run (even an interrupted one) is cleared first.
    down(workdir, {})
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    http_port, https_port = free_port(), free_port()
    env = {"TLSBRIDGE_HTTP_PORT": f"127.0.0.1:{http_port}",
           "TLSBRIDGE_HTTPS_PORT": f"127.0.0.1:{https_port}"}
    step(f"Pebble (local ACME CA); it validates HTTP-01 on 127.0.0.1:{http_port}, nginx's port 80")
    with PebbleServer(http_01_port=http_port, workdir=workdir / "pebble") as pebble:
        root_pem = workdir / "pebble-root.pem"
        root_pem.write_bytes(pebble.root_pem())
        print(f"directory {pebble.directory_url}; root CA saved to {root_pem}")
        config = workdir / "tlsbridge.yaml"
        config.write_text(f"""\
acme:
  directory: {pebble.directory_url}
  email: admin@example.com
  ca_bundle: {pebble.ca_bundle}
certbot: {{config_dir: ./letsencrypt, work_dir: ./certbot-work, logs_dir: ./logs}}
challenge: {{method: webroot, webroot: ./acme-webroot}}
publish: {{dir: ./certs}}
state: {{dir: ./state}}
sites:
  {SITE}:
    domains: [{DOMAIN}, www.{DOMAIN}]
    hsts: true
""")
        step(f"the config ({config})")
        print(config.read_text(), end="")
        try:
            step("tlsbridge compose: a compose file and nginx snippets")
            sh([TLSBRIDGE, "-q", "-c", str(config), "compose", "-o", str(workdir / "compose.yaml"),
                "--image", IMAGE])
            print(f"wrote {workdir / 'compose.yaml'} and {workdir / 'nginx'}/: "
                  + ", ".join(sorted(p.name for p in (workdir / "nginx").iterdir())))
            compose = [*compose_cmd(), "-p", PROJECT, "-f", str(workdir / "compose.yaml")]

            step("docker compose up --no-start (nginx cannot start before a certificate exists)")
            sh([*compose, "up", "--no-start"], env=env, quiet=True)

            step("tlsbridge renew: placeholder, start nginx, issue through its webroot, "
                 "publish, nginx -t + reload, verify")
            sh([TLSBRIDGE, "-c", str(config), "renew"], env=env)

            step("the site over HTTPS, trusting only Pebble's root")
            resolve = ["--resolve", f"{DOMAIN}:{https_port}:127.0.0.1",
                       "--resolve", f"{DOMAIN}:{http_port}:127.0.0.1"]
            sh(["curl", "-sS", "--fail", "--cacert", str(root_pem), *resolve, "-D", "-",
                f"https://{DOMAIN}:{https_port}/"])
            step("plain HTTP answers with a redirect")
            sh(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} -> %{redirect_url}\n",
                *resolve, f"http://{DOMAIN}:{http_port}/hello"])
            step("the served certificate is the published one")
            print(f"$ openssl s_client -connect 127.0.0.1:{https_port} -servername {DOMAIN} "
                  "| openssl x509 -noout -serial -issuer -enddate")
            served = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{https_port}",
                                     "-servername", DOMAIN], input="", text=True,
                                    capture_output=True, timeout=30).stdout
            leaf = subprocess.run(["openssl", "x509", "-noout", "-serial", "-issuer", "-enddate"],
                                  input=served, text=True, capture_output=True)
            published = subprocess.run(["openssl", "x509", "-noout", "-serial", "-issuer",
                                        "-enddate", "-in", str(workdir / "certs" / SITE / "cert.pem")],
                                       text=True, capture_output=True)
            print(f"served:    {leaf.stdout.strip()}".replace("\n", "\n           "))
            print(f"published: {published.stdout.strip()}".replace("\n", "\n           "))
            if leaf.stdout != published.stdout:
                raise SystemExit("demo: nginx does not serve the published certificate")

            step("a second renew: nothing is due, no CA contacted, no file changed")
            sh([TLSBRIDGE, "-c", str(config), "renew"], env=env)
            sh([TLSBRIDGE, "-c", str(config), "status"])
        finally:
            if not args.keep:
                step("cleaning up (compose down -v; --keep leaves nginx running)")
                down(workdir, env)
    print(f"\ndemo finished in {time.monotonic() - t0:.1f} s")
    if args.keep:
        print(f"nginx still runs: curl -k --resolve {DOMAIN}:{https_port}:127.0.0.1 "
              f"https://{DOMAIN}:{https_port}/  (stop: {' '.join(compose_cmd())} -p {PROJECT} "
              f"-f {workdir / 'compose.yaml'} down -v)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
