"""`tlsbridge validate`: load and check the config; silent on success."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlsbridge.cli import Context


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, ctx: Context) -> int:
    ctx.config()
    return 0
