"""Issue 10 point 7: `-c` after the command gets a hint (exit 2); the README's minimal config
makes `tlsbridge compose` warn about nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tlsbridge.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [["renew", "-c", "x.yaml"], ["status", "--config=x.yaml"],
                                  ["renew", "--force", "-q"]])
def test_a_global_option_after_the_command_says_where_it_goes(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err
    assert "is an option of tlsbridge itself: put it before the command" in err


def test_other_unknown_arguments_get_no_such_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["renew", "--bogus"])
    assert exc.value.code == 2
    assert "before the command" not in capsys.readouterr().err


def test_the_readme_minimal_config_makes_compose_warn_about_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"A minimal\s+config:\s+```yaml\n(.*?)```", readme, re.S)
    assert found, "the README's minimal config example"
    cfg = tmp_path / "tlsbridge.yaml"
    cfg.write_text(found.group(1))
    assert main(["-c", str(cfg), "compose", "-o", str(tmp_path / "compose.yaml")]) == 0
    assert "WARNING" not in capsys.readouterr().err
