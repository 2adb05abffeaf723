"""``sonolabel videos ...``."""
from __future__ import annotations

import click


@click.group("videos", help="Import and list ultrasound videos.")
def videos_cli() -> None:
    pass
