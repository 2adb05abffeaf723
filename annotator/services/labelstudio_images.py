"""Where a Label Studio task's image comes from, so tasks open with every image visible.

Label Studio's annotators' browsers fetch ``data.image`` themselves: a bare file name resolves
against the project page and 404s. Two set-ups, for every split of a version alike:

- Signed links: ``data.image`` is an absolute URL of SonoLabel's public
  ``/signed/frames/<token>.png`` route; the token (``signed_urls``) names the frame and an
  expiry, so the browser needs no SonoLabel log-in and gets that one image, read-only.
- Local files: a self-contained folder ``DIR`` with ``images/<v..._f...>.png`` (names from the
  video id and frame index, never user text), ``tasks.json`` and ``labeling-config.xml``;
  ``data.image`` is ``/data/local-files/?d=<path under the document root>``. The document root
  (Label Studio's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) is DIR's parent unless given.

Images are found by the task's ``video_id`` and ``frame_index``, which every task carries.
"""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlparse

import sqlalchemy as sa
from flask import current_app

from ..db import db
from ..models import Frame
from .coco_export import chunks, image_file_name
from .dataset_versions import link_or_copy, progress_bar
from .frames import data_dir, frame_relpath
from .labelstudio_export import LabelStudioRefused
from .signed_urls import DEFAULT_DAYS, frame_token

FrameKey = tuple[int, int]  # (video id, frame index)
# Puts the tasks' files in a local-files folder: (tasks, folder, its path under the root, progress)
Media = Callable[[list[dict[str, Any]], Path, str, bool], None]


def _key(task: dict[str, Any]) -> FrameKey:
    return int(task["data"]["video_id"]), int(task["data"]["frame_index"])


def stored_frames(tasks: list[dict[str, Any]]) -> dict[FrameKey, tuple[int, str]]:
    """(video id, frame index) -> (frame id, sha256) of each task's frame; refused if one of
    them is no longer stored (a version's video deleted since it was made)."""
    wanted = {_key(t) for t in tasks}
    found: dict[FrameKey, tuple[int, str]] = {}
    conn = db.session.connection()
    for part in chunks(sorted({v for v, _ in wanted})):
        for fid, vid, index, sha in conn.execute(
                sa.select(Frame.id, Frame.video_id, Frame.frame_index, Frame.sha256)
                .where(Frame.video_id.in_(part))):
            if (vid, index) in wanted:
                found[(vid, index)] = (fid, sha)
    missing = sorted(wanted - found.keys())
    if missing:
        vid, index = missing[0]
        raise LabelStudioRefused(f"Frame {index} of video {vid} is no longer stored "
                                 f"({len(missing)} frame(s) missing); its image cannot be exported.",
                                 status=409)
    return found


def check_base_url(base_url: str) -> str:
    """SonoLabel's address as Label Studio's browsers reach it: http(s), a host, no query."""
    parsed = urlparse(base_url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise LabelStudioRefused(f"{base_url!r} is not an address of this SonoLabel server "
                                 "(like https://sonolabel.example.org).")
    return base_url


def use_signed_urls(tasks: list[dict[str, Any]], base_url: str, days: float = DEFAULT_DAYS) -> None:
    """Point every task's ``data.image`` at a signed link under ``base_url``, valid ``days``."""
    parsed = urlparse(check_base_url(base_url))
    # The route's path comes from the url map, so a SonoLabel served under a path prefix works.
    adapter = current_app.url_map.bind(parsed.netloc, script_name=parsed.path or "/",
                                       url_scheme=parsed.scheme)
    frames = stored_frames(tasks)
    for task in tasks:
        token = frame_token(frames[_key(task)][0], days)
        task["data"]["image"] = adapter.build("videos.signed_frame_image", {"token": token},
                                              force_external=True)


def write_local_files(tasks: list[dict[str, Any]], config: str, out: Path,
                      document_root: Path | None = None, progress: bool = False,
                      media: Media | None = None) -> Path:
    """Write the local-files folder ``out`` (new or empty); returns its ``tasks.json``. Built
    beside ``out`` and renamed at the end, so a refusal or failure leaves nothing behind.
    ``media`` puts the tasks' files in the folder and points the tasks at them (default:
    each task's frame image, :func:`add_local_images`)."""
    out = Path(out).absolute()
    root = Path(document_root).absolute() if document_root is not None else out.parent
    if not out.is_relative_to(root):
        raise LabelStudioRefused(f"{out} is not inside the document root {root}: Label Studio "
                                 "serves only files under its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LabelStudioRefused(f"{out} exists and is not an empty folder.")
    under_root = "".join(f"{p}/" for p in out.relative_to(root).parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        (media or add_local_images)(tasks, tmp, under_root, progress)
        (tmp / "tasks.json").write_text(json.dumps(tasks, indent=1), encoding="utf-8")
        (tmp / "labeling-config.xml").write_text(config, encoding="utf-8")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "tasks.json"


def add_local_images(tasks: list[dict[str, Any]], folder: Path, under_root: str,
                     progress: bool = False) -> None:
    """Put every task's frame in ``folder/images`` and point ``data.image`` at it through
    Label Studio's local-files URL (``under_root``: the folder's path under the document root)."""
    frames = stored_frames(tasks)
    (folder / "images").mkdir()
    bar = progress_bar(len(tasks), "images", progress)
    try:
        for task in tasks:
            vid, index = _key(task)
            name = image_file_name(vid, index)
            src = data_dir() / frame_relpath(frames[(vid, index)][1])
            if not src.is_file():
                raise LabelStudioRefused(f"The image of frame {index} of video {vid} is missing "
                                         "from the data directory.", status=500)
            link_or_copy(src, folder / "images" / name)
            task["data"]["image"] = "/data/local-files/?d=" + quote(f"{under_root}images/{name}")
            bar.update()
    finally:
        bar.close()
