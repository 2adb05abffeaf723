"""``sonolabel videos ...``: import a video or DICOM cine, list what is imported."""
from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import with_appcontext
from sqlalchemy import func, select

from .cli_support import fail
from .db import db
from .models import Patient, Scene, Video


@click.group("videos", help="Import and list ultrasound videos.")
def videos_cli() -> None:
    pass


@videos_cli.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--patient", "patient_code", required=True, help="Pseudonymous patient code.")
@click.option("--scenes", default="auto", show_default=True,
              help="auto (cut detection, then runs of N), fixed:N, or none (one scene).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@with_appcontext
def import_command(path: Path, patient_code: str, scenes: str, as_json: bool) -> None:
    """Import PATH (MP4, AVI, MOV or DICOM): crop to the image, de-identify, store frames."""
    from tqdm import tqdm

    from .services.video_import import import_video

    if not path.is_file():
        fail(f"{path} does not exist or is not a file")
    try:
        path.open("rb").close()
    except OSError as err:  # no read permission: say so before any work starts
        fail(f"cannot read {path}: {err.strerror}")
    with tqdm(desc=f"importing {path.name}", unit="frame", leave=False, disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = import_video(path, patient_code, scenes=scenes, progress=progress)
    if as_json:
        click.echo(json.dumps(result.as_json()))
    elif result.created:
        click.echo(f"imported video {result.video.id}: {result.frames} frames, {result.scenes} "
                   f"scenes, roi {result.roi}")
    else:
        click.echo(f"already imported as video {result.video.id}: {result.frames} frames, "
                   f"{result.scenes} scenes, roi {result.roi}")


@videos_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@with_appcontext
def list_command(as_json: bool) -> None:
    """List imported videos with their patient, frames, scenes and ROI."""
    counts = dict(db.session.execute(
        select(Scene.video_id, func.count()).group_by(Scene.video_id)).all())
    rows = db.session.execute(
        select(Video, Patient.code).join(Patient).order_by(Video.id)).all()
    for video, code in rows:
        item = {"video_id": video.id, "patient": code, "source_name": video.source_name,
                "frames": video.frame_count, "scenes": counts.get(video.id, 0), "roi": video.roi,
                "deidentified": video.deidentified}
        if as_json:
            click.echo(json.dumps(item))
        else:
            click.echo(f"{video.id}\t{code}\t{video.frame_count} frames\t{item['scenes']} scenes\t"
                       f"roi {video.roi}\t{video.source_name}")
