"""The user's compose override: `tlsbridge compose -o FILE` writes a commented starter next to
FILE once, named the way Compose merges it, and never writes it again; the generated file's
header says where user edits go. (Compose's own merge is checked in
tests/integration/test_onboarding.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tlsbridge.cli import main
from tlsbridge.render.compose import override_name

CONFIG = """
publish: {dir: ./certs}
challenge: {webroot: ./webroot}
sites:
  shop:
    domains: [shop.example.com]
    upstream: http://app:8080
"""


def generate(folder: Path, name: str = "compose.yaml", *extra: str) -> int:
    (folder / "tlsbridge.yaml").write_text(CONFIG)
    return main(["-c", str(folder / "tlsbridge.yaml"), "compose", "-o", str(folder / name), *extra])


@pytest.mark.parametrize("mode", [[], ["--sidecar"]], ids=["host", "sidecar"])
def test_starter_written_once_valid_and_harmless(tmp_path: Path, mode: list[str]) -> None:
    if mode:
        sidecar_config = CONFIG.replace("./certs", "/var/lib/tb/certs").replace("./webroot", "/var/lib/tb/acme")
        (tmp_path / "tlsbridge.yaml").write_text(sidecar_config)
        assert main(["-c", str(tmp_path / "tlsbridge.yaml"), "compose", "-o",
                     str(tmp_path / "compose.yaml"), *mode]) == 0
    else:
        assert generate(tmp_path) == 0
    override = tmp_path / "compose.override.yaml"
    text = override.read_text()
    assert oct(override.stat().st_mode & 0o777) == "0o644"
    doc = yaml.safe_load(text)
    # As written it changes nothing: nginx with no extra ports, no app yet.
    assert doc == {"services": {"nginx": {"ports": None}}}
    assert "# app:" in text and "upstream: http://app:8080" in text and '"8443:8443"' in text
    header = (tmp_path / "compose.yaml").read_text().split("services:")[0]
    assert "compose.override.yaml" in header and "never touches it again" in header


def test_never_overwritten_nor_modified(tmp_path: Path) -> None:
    assert generate(tmp_path) == 0
    override = tmp_path / "compose.override.yaml"
    mine = "services:\n  app:\n    image: example/app:1\n"
    override.write_text(mine)
    os.utime(override, ns=(1_000_000_000, 1_000_000_000))
    (tmp_path / "tlsbridge.yaml").write_text(CONFIG.replace("shop.example.com", "shop.example.org"))
    assert main(["-c", str(tmp_path / "tlsbridge.yaml"), "compose", "-o", str(tmp_path / "compose.yaml")]) == 0
    assert "shop.example.org" in (tmp_path / "nginx" / "tlsbridge-site-shop.conf").read_text()
    assert override.read_text() == mine and override.stat().st_mtime_ns == 1_000_000_000
    # Removed by the user: a fresh starter next time (only ever when there is none).
    override.unlink()
    assert generate(tmp_path) == 0
    assert "# app:" in override.read_text()


def test_a_link_in_its_place_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "compose.override.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    assert generate(tmp_path) == 0
    assert not (tmp_path / "elsewhere.yaml").exists()
    assert (tmp_path / "compose.override.yaml").is_symlink()


def test_no_starter_when_printing_to_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tlsbridge.yaml").write_text(CONFIG)
    assert main(["-c", "tlsbridge.yaml", "compose"]) == 0
    assert "compose.override.yaml" in capsys.readouterr().out
    assert not (tmp_path / "compose.override.yaml").exists()


@pytest.mark.parametrize(("name", "override", "automatic"), [
    ("compose.yaml", "compose.override.yaml", True),
    ("compose.yml", "compose.override.yml", True),
    ("docker-compose.yml", "docker-compose.override.yml", True),
    ("stack.yaml", "stack.override.yaml", False),
])
def test_named_after_the_compose_file(tmp_path: Path, name: str, override: str, automatic: bool) -> None:
    assert override_name(name) == override
    assert generate(tmp_path, name) == 0
    assert (tmp_path / override).is_file()
    header = (tmp_path / name).read_text().split("services:")[0]
    hint = f"-f {name} -f {override}"
    assert (hint not in header) if automatic else (hint in header.replace("\n# ", " "))


SIDECAR_CONFIG = CONFIG.replace("./certs", "/var/lib/tb/certs").replace("./webroot", "/var/lib/tb/acme")


@pytest.mark.parametrize(("extra", "want"), [
    ([], 'image: "example/tlsbridge:7"'),  # run in the image: that image
    (["--sidecar-image", "mine:1"], 'image: "mine:1"'),
    (["--build-context", "."], "build:"),
])
def test_in_the_image_the_stack_runs_that_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                extra: list[str], want: str) -> None:
    monkeypatch.setenv("TLSBRIDGE_IMAGE", "example/tlsbridge:7")  # the Dockerfile's ENV
    (tmp_path / "tlsbridge.yaml").write_text(SIDECAR_CONFIG)
    out = tmp_path / "compose.yaml"
    assert main(["-c", str(tmp_path / "tlsbridge.yaml"), "compose", "--sidecar", "-o", str(out), *extra]) == 0
    text = out.read_text()
    assert want in text
    assert ("build:" in text) == (want == "build:")
