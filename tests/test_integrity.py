"""Nothing lost, nothing silently left out: damaged packets are reported, ``sonolabel check``
finds missing and damaged frame files, orphan files, stale uploads and stale jobs, and
``--repair`` fixes only what it may; the frame store's deletion rule holds beside an import in
flight; an upload whose process was killed is swept."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import av
import pytest
from helpers import cli, data_files, frames_of, make_video, write_video

from annotator.db import db
from annotator.models import Frame, Job, JobStatus, utcnow
from annotator.services import ImportRefused
from annotator.services import integrity
from annotator.services.frames import FrameStore
from annotator.services.uploads import stale_uploads, upload_file
from annotator.services.video_import import import_video

DAY = 24 * 3600


def _damage_packets(path: Path, *indices: int) -> Path:
    """Zero the bytes of the given video packets, as a bad disk or transfer would."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    data = bytearray(path.read_bytes())
    for index in indices:
        pos, size = packets[index]
        data[pos:pos + size] = bytes(size)
    path.write_bytes(bytes(data))
    return path


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _check(app, *args: str) -> tuple[int, dict]:
    result = cli(app, "check", "--json", *args)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


# --- damaged packets ----------------------------------------------------------------------

def test_damaged_packets_are_skipped_and_reported(app, login, tmp_path):
    clean = write_video(tmp_path / "clean.avi", n=12, seed=4)
    out = cli(app, "videos", "import", str(clean), "--patient", "P-0", "--json")
    assert json.loads(out.stdout)["skipped_frames"] == []

    path = _damage_packets(write_video(tmp_path / "bad.avi", n=40, seed=5), 20)
    out = cli(app, "videos", "import", str(path), "--patient", "P-1", "--json")
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["frames"] == 39
    assert result["skipped_frames"] == [{"timestamp_ms": pytest.approx(1333.333), "before_frame": 20}]
    with app.app_context():
        frames = frames_of(result["video_id"])
        # Stored frame 20 is the source's frame 21: its time says so.
        assert frames[20].timestamp_ms == pytest.approx(21 * 1000 / 15)
    page = login("annotator").get(f"/videos/{result['video_id']}").get_data(as_text=True)
    assert "1 damaged frame could not be decoded" in page
    assert "at 1.333 s, just before frame 20" in page

    # MPEG-4 is decoded on several threads: the refusal surfaces packets later, the report not.
    mp4 = _damage_packets(write_video(tmp_path / "bad.mp4", n=40, fourcc="mp4v", seed=6), 20, 33)
    resp = login("data_manager").post(
        "/videos/upload", data={"file": (io.BytesIO(mp4.read_bytes()), "bad.mp4"), "patient": "P-2"},
        content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["frames"] == 38
    assert resp.get_json()["skipped_frames"] == [
        {"timestamp_ms": pytest.approx(1333.333), "before_frame": 20},
        {"timestamp_ms": pytest.approx(2200.0), "before_frame": 32}]


# --- sonolabel check and --repair -----------------------------------------------------------

def test_check_of_a_sound_store_exits_0(app):
    with app.app_context():
        make_video(app, "P-1", ["new", "reviewed"])
    result = cli(app, "check")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == (
        "checked 6 frame rows (6 files): 0 missing, 0 damaged, 0 orphan files, 0 stale uploads, "
        "0 stale jobs: clean")


def test_check_finds_every_problem_and_repair_fixes_only_what_it_may(app):
    root = Path(app.config["SONOLABEL_DATA_DIR"])
    with app.app_context():
        video_id = make_video(app, "P-1", ["new", "reviewed"])
        (first, first_id), (second, _) = [(f.relpath, f.id) for f in frames_of(video_id)[:2]]
        gone, bad = root / first, root / second
        backup = {gone: gone.read_bytes(), bad: bad.read_bytes()}
        stale_job = Job(kind="retrain", params={}, status=JobStatus.running, worker="gpu-box:8",
                        heartbeat_at=utcnow() - timedelta(minutes=10))
        live_job = Job(kind="retrain", params={}, status=JobStatus.running, worker="gpu-box:7",
                       heartbeat_at=utcnow())
        db.session.add_all([stale_job, live_job])
        db.session.commit()
        stale_id, live_id = stale_job.id, live_job.id
    gone.unlink()
    bad.write_bytes(b"not the picture it was")
    old_orphan = root / "frames" / "ab" / ("ab" + "1" * 62 + ".png")
    old_orphan.parent.mkdir(parents=True, exist_ok=True)
    old_orphan.write_bytes(b"png of an import that failed long ago")
    cut_short = old_orphan.parent / ".ab11.0123.tmp"  # a write killed before its rename
    cut_short.write_bytes(b"half a png")
    recent_orphan = old_orphan.with_name("ab" + "2" * 62 + ".png")
    recent_orphan.write_bytes(b"png of an import that may be in flight")
    for path in (old_orphan, cut_short):
        _age(path, 2 * DAY)
    with app.app_context(), upload_file("live.mp4") as live_upload:
        live_upload.write_bytes(b"being imported right now")
        _age(live_upload.parent, 120)
        killed = root / "tmp" / "tmpkilled.upload"
        killed.mkdir()
        (killed / "clip.mp4").write_bytes(b"the first megabytes of a video")
        _age(killed, 120)  # past the grace minute, and nobody holds its lock
        ancient = root / "tmp" / "tmpold.upload"  # left as a plain file by an earlier version
        ancient.write_bytes(b"x")
        _age(ancient, 2 * DAY)

        text = cli(app, "check")
        assert text.exit_code == 1
        assert f"missing: {first} (video {video_id} frame 0): restore" in text.stdout
        assert text.stdout.strip().splitlines()[-1].endswith(": 7 problems")

        code, report = _check(app)
        assert code == 1 and report["ok"] is False and report["problems"] == 7
        assert [(m["path"], m["frames"]) for m in report["missing"]] == [
            (first, [{"video_id": video_id, "frame_index": 0, "frame_id": first_id}])]
        assert [d["path"] for d in report["damaged"]] == [second]
        assert sorted(o["path"] for o in report["orphans"]) == sorted(
            p.relative_to(root).as_posix() for p in (old_orphan, cut_short))
        assert [o["path"] for o in report["recent_orphans"]] == [recent_orphan.relative_to(root).as_posix()]
        assert report["stale_uploads"] == ["tmp/tmpkilled.upload", "tmp/tmpold.upload"]
        assert [j["id"] for j in report["stale_jobs"]] == [stale_id]

        code, report = _check(app, "--repair")
        assert code == 1 and report["problems"] == 2  # the missing and the damaged file remain
        assert report["repaired"] == {"orphan_files": 2, "uploads": 2, "jobs": [stale_id]}
        assert not old_orphan.exists() and not cut_short.exists() and recent_orphan.exists()
        assert not killed.exists() and not ancient.exists() and live_upload.is_file()
        assert not gone.exists() and bad.read_bytes() == b"not the picture it was"
        assert db.session.scalar(db.select(db.func.count(Frame.id))) == 6
        assert db.session.get(Job, stale_id).status == JobStatus.failed
        assert "sonolabel check --repair" in db.session.get(Job, stale_id).log_tail
        assert db.session.get(Job, live_id).status == JobStatus.running

    for path, data in backup.items():  # restored from a backup, as the report says to do
        path.write_bytes(data)
    code, report = _check(app)
    assert code == 0 and report["ok"] and len(report["recent_orphans"]) == 1


# --- the frame store's deletion rule ----------------------------------------------------------

def test_a_failing_import_beside_one_in_flight_leaves_orphans_for_the_sweep(app, tmp_path,
                                                                              monkeypatch):
    root = Path(app.config["SONOLABEL_DATA_DIR"])
    whole = write_video(tmp_path / "whole.avi", n=60, seed=8).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) * 7 // 10])
    store = FrameStore(root)
    with app.app_context():
        with store.writing():  # another import in flight: nothing may be deleted now
            with pytest.raises(ImportRefused, match="truncated"):
                import_video(cut, "P-1")
        left = [p for p in data_files(app) if p.suffix == ".png"]
        assert len(left) > 30  # the frames decoded before the cut (those still queued are not)
    code, report = _check(app)
    assert code == 0 and len(report["recent_orphans"]) == len(left)  # maybe an import's: no problem

    for path in left:
        _age(path, 2 * DAY)
    monkeypatch.setattr(integrity, "LOCK_WAIT_S", 0.2)
    with store.writing():
        code, report = _check(app, "--repair")
    assert code == 1 and report["repaired"]["orphan_files"] == 0 and "run the repair again" in report["notes"][0]
    assert all(p.exists() for p in left)
    code, report = _check(app, "--repair")
    assert code == 0 and report["repaired"]["orphan_files"] == len(left)
    assert data_files(app) == []


# --- uploads killed mid-way -----------------------------------------------------------------

_UPLOADER = """
import sys, time
from flask import Flask
from annotator.services.uploads import upload_file
app = Flask("uploader")
app.config["SONOLABEL_DATA_DIR"] = sys.argv[1]
with app.app_context(), upload_file("clip.mp4") as path:
    path.write_bytes(b"the first part of a long upload")
    print(path, flush=True)
    time.sleep(60)
"""


def test_an_upload_whose_process_was_killed_is_swept(app, login, tmp_path):
    root = Path(app.config["SONOLABEL_DATA_DIR"])
    uploader = subprocess.Popen([sys.executable, "-c", _UPLOADER, str(root)], stdout=subprocess.PIPE,
                                text=True)
    try:
        folder = Path(uploader.stdout.readline().strip()).parent
        _age(folder, 120)
        assert stale_uploads(root / "tmp") == []  # its writer is alive
    finally:
        uploader.send_signal(signal.SIGKILL)
        uploader.wait()
        uploader.stdout.close()
    assert folder.is_dir() and stale_uploads(root / "tmp") == [folder]
    code, report = _check(app)
    assert code == 1 and report["stale_uploads"] == [folder.relative_to(root).as_posix()]
    resp = login("data_manager").post(  # the next upload sweeps it
        "/videos/upload", data={"file": (io.BytesIO(b"not a video"), "x.mp4"), "patient": "P-1"},
        content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert resp.status_code == 415
    assert list((root / "tmp").iterdir()) == []
