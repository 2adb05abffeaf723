"""``sonolabel datasets ...``, ``sonolabel export ...`` and ``sonolabel labels ...``.

Refusals (bad names, leaks, malformed label files) print ``error: ...`` on stderr and exit 2
(``cli_support``); a label import with problems first lists each one on stdout.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext

from .cli_support import ID, fail
from .services.input_checks import json_document


def _ints(text: str | None, what: str) -> tuple[int, ...]:
    if not text:
        return ()
    return tuple(ID.parse(v.strip(), what) for v in text.split(","))


def _words(text: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (text or "").split(",") if v.strip())


def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        fail(f"cannot read {path}: {err.strerror}")
    return json_document(raw, path)


# --- datasets --------------------------------------------------------------------------------

@click.group("datasets", help="Freeze and list dataset versions.")
def datasets_cli() -> None:
    pass


@datasets_cli.command("create")
@click.argument("name")
@click.option("--split-by", type=click.Choice(["patient", "video"]), default="patient",
              show_default=True, help="What may never be in two parts.")
@click.option("--ratios", default="0.7,0.15,0.15", show_default=True,
              help="train,val,test shares; a 0 drops that part.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--status", default="reviewed", show_default=True,
              help="Scene statuses, comma-separated ('any' for all).")
@click.option("--video", "videos", default="", help="Only these video ids (comma-separated).")
@click.option("--patient", "patients", default="", help="Only these patient codes.")
@click.option("--class", "classes", default="", help="Only scenes with, and boxes of, these classes.")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@with_appcontext
def create_cmd(name: str, split_by: str, ratios: str, seed: int, status: str, videos: str,
               patients: str, classes: str, as_json: bool) -> None:
    """Freeze the selected scenes as version NAME (immutable), split without leakage."""
    from .services.dataset_create import create_version
    from .services.dataset_split import Selection, SplitSpec, parse_ratios

    statuses = () if status.strip().lower() == "any" else _words(status)
    selection = Selection(statuses=statuses, video_ids=_ints(videos, "--video"),
                          patient_codes=_words(patients), class_names=_words(classes))
    spec = SplitSpec(by=split_by, ratios=parse_ratios(ratios), seed=seed)
    version = create_version(name, selection, spec, progress=True)
    if as_json:
        click.echo(json.dumps({"version": version.name, "hash": version.content_hash,
                               "splits": version.summary}))
        return
    click.echo(f"version {version.name}: {version.image_count} images, {version.box_count} boxes, "
               f"hash {version.content_hash}")
    for part, s in version.summary.items():
        click.echo(f"  {part}: {s['images']} images, {s['boxes']} boxes, "
                   f"patients {', '.join(s['patients'])}")


@datasets_cli.command("list")
@with_appcontext
def list_cmd() -> None:
    """List the versions, newest first."""
    import sqlalchemy as sa

    from .db import db
    from .models import DatasetVersion

    for v in db.session.scalars(sa.select(DatasetVersion).order_by(DatasetVersion.id.desc())):
        parts = ", ".join(f"{p} {s['images']}" for p, s in v.summary.items())
        click.echo(f"{v.name}\t{v.created_at:%Y-%m-%d %H:%M}\tby {v.split_by}\t{parts}\t"
                   f"{v.content_hash[:12]}")


@datasets_cli.command("verify")
@click.argument("version")
@with_appcontext
def verify_cmd(version: str) -> None:
    """Check that VERSION's files still match its hash."""
    from .services.dataset_versions import get_version, split_files

    split_files(get_version(version))
    click.echo(f"version {version}: files match the hash")


@datasets_cli.command("delete")
@click.argument("version")
@with_appcontext
def delete_cmd(version: str) -> None:
    """Delete VERSION (rows, files, zip) unless a model, report or waiting job uses it."""
    from .services.dataset_versions import delete_version, get_version

    delete_version(get_version(version))
    click.echo(f"version {version}: deleted")


# --- export ----------------------------------------------------------------------------------

@click.group("export", help="Write a dataset version as COCO or Label Studio files.")
def export_cli() -> None:
    pass


@export_cli.command("coco")
@click.argument("version")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="New or empty folder: OUT/<part>/annotations.json and the images beside it.")
@with_appcontext
def export_coco_cmd(version: str, out: str) -> None:
    """Copy VERSION's frozen COCO parts and images to OUT."""
    from .services.dataset_versions import export_coco, get_version

    files = export_coco(get_version(version), Path(out), progress=True)
    for part, path in files.items():
        click.echo(f"{part}: {path}")


@export_cli.command("labelstudio")
@click.argument("version", required=False)
@click.option("--scene", "scene_id", type=ID, help="Export this scene (as it is now) instead.")
@click.option("--video", "video_id", type=ID, help="Export this video (as it is now) instead.")
@click.option("--out", type=click.Path(),
              help="Tasks JSON; the labeling config is written beside it as <out>.xml.")
@click.option("--image-url-base", metavar="URL", help="SonoLabel's address as Label Studio's "
              "browsers reach it, e.g. https://sonolabel.example.org: each image becomes a "
              "signed, expiring link there that needs no SonoLabel log-in.")
@click.option("--expires-days", type=float, help="How long the signed links work "
              "(with --image-url-base; default 30).")
@click.option("--local-files", type=click.Path(file_okay=False), metavar="DIR",
              help="Instead of --out: a new folder with images/, tasks.json and "
              "labeling-config.xml for Label Studio's local-files storage.")
@click.option("--document-root", type=click.Path(file_okay=False), help="Label Studio's "
              "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (with --local-files; default: DIR's parent).")
@click.option("--image-prefix", default="", help="Put before each image file name instead, "
              "e.g. /data/local-files/?d=sonolabel/")
@click.option("--predictions/--no-predictions", default=None, help="Export the pending model "
              "pre-labels as predictions with their scores and model versions (--scene or "
              "--video; on by default).")
@click.option("--video-tasks", is_flag=True, help="One task per scene instead of one per "
              "frame: the scene as an H.264 clip, each track a VideoRectangle region with its "
              "boxes as keyframes (with --image-url-base or --local-files).")
@click.option("--push", "push_url", help="Also create a project on this Label Studio server.")
@click.option("--token", envvar="LABEL_STUDIO_API_KEY", help="Access token for --push.")
@with_appcontext
def export_labelstudio_cmd(version: str | None, scene_id: int | None, video_id: int | None,
                           out: str | None, image_url_base: str | None, expires_days: float | None,
                           local_files: str | None, document_root: str | None, image_prefix: str,
                           predictions: bool | None, video_tasks: bool, push_url: str | None,
                           token: str | None) -> None:
    """Write VERSION (or --scene, --video) as Label Studio tasks plus the matching labeling config."""
    from .services.dataset_versions import get_version
    from .services.labelstudio_export import labeling_config, push, scene_tasks, version_tasks
    from .services.labelstudio_export import video_tasks as frame_tasks
    from .services.labelstudio_images import use_signed_urls, write_local_files
    from .services.signed_urls import DEFAULT_DAYS, check_days

    if sum(v is not None for v in (version, scene_id, video_id)) != 1:
        fail("name one VERSION, or give --scene or --video")
    if (out is None) == (local_files is None):
        fail("give --out FILE or --local-files DIR (one of them)")
    if sum(bool(v) for v in (image_url_base, local_files, image_prefix)) > 1:
        fail("--image-url-base, --local-files and --image-prefix are different set-ups: pick one")
    if expires_days is not None and not image_url_base:
        fail("--expires-days goes with --image-url-base")
    if document_root is not None and local_files is None:
        fail("--document-root goes with --local-files")
    if version is not None and predictions:
        fail("a version holds ground truth only; export pre-labels with --scene or --video")
    days = check_days(DEFAULT_DAYS if expires_days is None else expires_days)
    keep = predictions is not False
    media = None
    if video_tasks:
        tasks, title, config, media = _video_tasks(version, scene_id, video_id, image_url_base,
                                                   days, local_files, image_prefix, predictions)
    elif version is not None:
        tasks, title = version_tasks(get_version(version), image_prefix), f"SonoLabel {version}"
    elif scene_id is not None:
        tasks, title = scene_tasks(scene_id, image_prefix, keep), f"SonoLabel scene {scene_id}"
    else:
        tasks, title = frame_tasks(video_id, image_prefix, keep), f"SonoLabel video {video_id}"
    if not video_tasks:
        config = labeling_config()
        if image_url_base:
            use_signed_urls(tasks, image_url_base, days)
    if local_files is not None:
        path = write_local_files(tasks, config, Path(local_files),
                                 Path(document_root) if document_root else None, progress=True,
                                 media=media)
        click.echo(f"{len(tasks)} tasks: {path}; {'clips' if video_tasks else 'images'}: "
                   f"{path.parent / ('videos' if video_tasks else 'images')}; "
                   f"labeling config: {path.parent / 'labeling-config.xml'}")
    project_id = push(push_url, token or "", title, tasks, config) if push_url else None
    if out is not None:
        path = Path(out)
        _write_atomic(path, json.dumps(tasks, indent=1))
        _write_atomic(path.with_name(path.name + ".xml"), config)
        click.echo(f"{len(tasks)} tasks: {path}; labeling config: {path}.xml")
    if project_id is not None:
        click.echo(f"pushed to {push_url}: project {project_id}")


def _video_tasks(version: str | None, scene_id: int | None, video_id: int | None,
                 image_url_base: str | None, days: float, local_files: str | None, image_prefix: str,
                 predictions: bool | None) -> tuple[list[dict], str, str, Any]:
    """Video tasks (one per scene) with their clips reachable: tasks, title, config, and what
    puts the clips in a local-files folder."""
    from .services import labelstudio_video as lsv
    from .services.dataset_versions import get_version

    if image_prefix:
        fail("--image-prefix is for image tasks; video tasks take --image-url-base or --local-files")
    if predictions:
        fail("video tasks carry manual and propagated boxes as tracks; pending pre-labels stay "
             "in SonoLabel (leave out --predictions)")
    if not image_url_base and local_files is None:
        fail("video tasks need --image-url-base URL (signed clip links) or --local-files DIR: "
             "Label Studio's browsers must be able to load each clip")
    if version is not None:
        (tasks, fps), title = lsv.version_video_tasks(get_version(version)), f"SonoLabel {version}"
    elif scene_id is not None:
        (tasks, fps), title = lsv.scene_video_tasks(scene_id), f"SonoLabel scene {scene_id}"
    else:
        (tasks, fps), title = lsv.video_video_tasks(video_id), f"SonoLabel video {video_id}"
    if image_url_base:
        lsv.use_signed_clip_urls(tasks, fps, image_url_base, days, progress=True)
    return tasks, title + " (video)", lsv.video_labeling_config(fps), lsv.add_local_clips(fps)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        fail(f"cannot write {path}: {err.strerror}")


# --- labels ----------------------------------------------------------------------------------

@click.group("labels", help="Import labels made elsewhere.")
def labels_cli() -> None:
    pass


_MATCH = click.Choice(["frame_index", "file_name"])
_STATUS = click.Choice(["new", "in_progress", "submitted", "reviewed", "returned"])


def _reopen_options(fn: Any) -> Any:
    """``--as``, ``--reopen`` and ``--reason``: who imports, and an admin's leave to change
    submitted or reviewed scenes (refused without it)."""
    fn = click.option("--reason", help="Why the locked scenes are reopened (with --reopen; "
                      "kept as their review comment and in the audit).")(fn)
    fn = click.option("--reopen", is_flag=True, help="Reopen the submitted or reviewed scenes "
                      "this import changes (back to returned); admins only, needs --as and "
                      "--reason.")(fn)
    return click.option("--as", "as_user", metavar="NAME",
                        help="The user the import is recorded under (an admin for --reopen).")(fn)


def _run_import(kind: str, path: str, video: int, match: str, status: str | None, dry_run: bool,
                as_json: bool, as_user: str | None, reopen: bool, reason: str | None) -> None:
    from .services.coco_import import import_coco
    from .services.label_import import LabelImportRefused
    from .services.labelstudio_import import import_labelstudio
    from .services.workflow import active_user, reopen_leave

    if reason is not None and not reopen:
        fail("--reason goes with --reopen")
    if reopen and as_user is None:
        fail("--reopen needs --as NAME: an admin, recorded as who reopened the scenes")
    user = active_user(as_user) if as_user is not None else None
    leave = reopen_leave(user, reason) if reopen else None
    data = _read_json(path)
    run = import_coco if kind == "coco" else import_labelstudio
    extra = {} if kind == "coco" else {"progress": True}
    try:
        report = run(data, video, match=match, status=status, dry_run=dry_run, user=user,
                     reopen=leave, **extra)
    except LabelImportRefused as err:
        for problem in err.problems:
            click.echo(f"problem: {problem}")
        fail(f"{len(err.problems)} problem(s) in {path}; nothing was imported")
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        for line in report.lines():
            click.echo(line)


@labels_cli.command("import")
@click.argument("annotations", type=click.Path())
@click.option("--video", type=ID, required=True, help="The imported video the labels belong to.")
@click.option("--match", type=_MATCH, default="frame_index", show_default=True)
@click.option("--status", type=_STATUS, help="Set the touched scenes to this status.")
@click.option("--dry-run", is_flag=True, help="Check and report; write nothing.")
@click.option("--json", "as_json", is_flag=True)
@_reopen_options
@with_appcontext
def import_cmd(annotations: str, video: int, match: str, status: str | None, dry_run: bool,
               as_json: bool, as_user: str | None, reopen: bool, reason: str | None) -> None:
    """Import a COCO file's boxes into VIDEO's frames (all or nothing). Label Studio's COCO
    export imports with --match file_name."""
    _run_import("coco", annotations, video, match, status, dry_run, as_json, as_user, reopen,
                reason)


@labels_cli.command("import-labelstudio")
@click.argument("export", type=click.Path())
@click.option("--video", type=ID, required=True)
@click.option("--match", type=_MATCH, default="frame_index", show_default=True,
              help="data.frame_index of the task, or the file name in data.image.")
@click.option("--status", type=_STATUS, help="Set the touched scenes to this status.")
@click.option("--dry-run", is_flag=True,
              help="Check and print the diff (added, moved, deleted, unchanged per frame); "
                   "write nothing.")
@click.option("--json", "as_json", is_flag=True)
@_reopen_options
@with_appcontext
def import_labelstudio_cmd(export: str, video: int, match: str, status: str | None, dry_run: bool,
                           as_json: bool, as_user: str | None, reopen: bool,
                           reason: str | None) -> None:
    """Sync a Label Studio JSON export (annotations and predictions) into VIDEO's frames.

    Each task's most recent annotation is the truth for its frame: boxes moved there are
    moved here, manual boxes deleted there are deleted, new ones added; --dry-run prints
    that diff per frame and writes nothing."""
    _run_import("labelstudio", export, video, match, status, dry_run, as_json, as_user, reopen,
                reason)
