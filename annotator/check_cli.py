"""``sonolabel check [--repair] [--json]``: the command an operator runs after a crash or a
restore (the work is in :mod:`annotator.services.integrity`)."""
from __future__ import annotations

import json
from typing import Any, Iterable

import click
from flask.cli import with_appcontext

TEXT_LIMIT = 20  # problems of one kind listed in text; --json lists them all


@click.command("check", help="Check that every frame row's file is there and intact, and find "
                             "orphan files, stale uploads and stale jobs. Exit 1 if anything is wrong.")
@click.option("--repair", is_flag=True,
              help="Remove old orphan files and stale uploads, mark stale jobs failed. "
                   "Never deletes a frame row or a file a row references.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@with_appcontext
def check_command(repair: bool, as_json: bool) -> None:
    from tqdm import tqdm

    from .services.integrity import run_check

    def progress(items: Iterable[Any], desc: str, total: int) -> Iterable[Any]:
        return tqdm(items, desc=desc, total=total, leave=False, disable=None)

    report = run_check(repair=repair, progress=progress)
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        data = report.as_json()
        for kind in ("missing", "damaged"):
            for item in data[kind][:TEXT_LIMIT]:
                frames = ", ".join(f"video {f['video_id']} frame {f['frame_index']}"
                                   for f in item["frames"][:3])
                click.echo(f"{kind}: {item['path']} ({frames}{', ...' if len(item['frames']) > 3 else ''}):"
                           f" {item['fix']}")
        for item in data["orphans"][:TEXT_LIMIT]:
            click.echo(f"orphan: {item['path']} ({item['age_h']} h old, no row references it)")
        for path in data["stale_uploads"][:TEXT_LIMIT]:
            click.echo(f"stale upload: {path}")
        for job in data["stale_jobs"]:
            click.echo(f"stale job {job['id']} ({job['kind']}): its worker {job['worker']} is gone")
        for note in report.notes:
            click.echo(f"note: {note}")
        if not repair and (report.orphans or report.stale_uploads or report.stale_jobs):
            click.echo("`sonolabel check --repair` removes the orphans and stale uploads and marks "
                       "stale jobs failed")
        click.echo(report.summary())
    if report.problems:
        click.get_current_context().exit(1)
