"""What every crossfire command line shares: tyro's settings and the start-up of a command."""

from __future__ import annotations

import sys
from typing import Type

import tyro

TYRO_CONFIG = (tyro.conf.CascadeSubcommandArgs, tyro.conf.SuppressFixed)
"""Options may come in any order around the matcher:<name> subcommand; fixed fields (_target) are hidden."""


def run(command: Type) -> None:
    """Parse ``command`` (a dataclass with ``main() -> int``) from sys.argv, run it and exit with its status."""
    tyro.extras.set_accent_color("bright_yellow")
    sys.exit(tyro.cli(command, config=TYRO_CONFIG).main())
