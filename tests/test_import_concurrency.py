"""Two imports of overlapping video at once, one of them failing (a truncated copy of the
other's file): the failing one's clean-up must not take frame files from under the other,
whose rows are not committed yet. Threads, each with its own app context and session, import
real files; the interleaving that lost frames is forced in every round."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Callable

from helpers import frames_of, write_video

from annotator.services import ImportRefused
from annotator.services.integrity import run_check
from annotator.services.video_import import import_video

ROUNDS = 8
FRAMES = 60  # 4 s at 15 fps: the truncated copy still holds the 2 s the ROI is found on
WAIT_S = 30


def _meet(at: int, arrived: threading.Event, then: threading.Event) -> Callable[[int, int], None]:
    """A progress callback: once ``at`` frames are stored, say so and wait for ``then``."""
    def pause(done: int, total: int) -> None:
        if done == at:
            arrived.set()
            assert then.wait(WAIT_S)

    return pause


def _import_pair(app, good: Path, cut: Path, tag: str, reuse_at: int) -> tuple[int, Exception]:
    """Import ``cut`` (fails) and ``good`` (succeeds) in two threads: the failing import has
    written ``reuse_at`` frames when the other starts; the other has reused them when the
    failing one goes on to fail and clean up; then the other commits."""
    wrote, reused, failed = threading.Event(), threading.Event(), threading.Event()
    out: dict[str, object] = {}

    def failing() -> None:
        try:
            with app.app_context():
                import_video(cut, f"F{tag}", progress=_meet(reuse_at, wrote, reused))
        except Exception as err:  # noqa: BLE001 - handed to the test thread below
            out["failing"] = err
        finally:
            wrote.set()
            failed.set()

    def succeeding() -> None:
        try:
            assert wrote.wait(WAIT_S)
            with app.app_context():
                out["video"] = import_video(good, f"G{tag}", progress=_meet(reuse_at, reused,
                                                                            failed)).video.id
        except Exception as err:  # noqa: BLE001
            out["succeeding"] = err
        finally:
            reused.set()

    threads = [threading.Thread(target=failing), threading.Thread(target=succeeding)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2 * WAIT_S)
    assert "succeeding" not in out, out["succeeding"]
    return out["video"], out["failing"]  # type: ignore[return-value]


def test_a_failing_import_never_takes_frames_from_a_concurrent_one(app, tmp_path):
    root = Path(app.config["SONOLABEL_DATA_DIR"])
    for r in range(ROUNDS):
        good = write_video(tmp_path / f"good{r}.avi", n=FRAMES, seed=100 + r)
        data = good.read_bytes()
        cut = tmp_path / f"cut{r}.avi"
        cut.write_bytes(data[: len(data) * 7 // 10])
        video_id, failure = _import_pair(app, good, cut, str(r), reuse_at=4 + 4 * r)
        assert isinstance(failure, ImportRefused) and "truncated" in str(failure)
        with app.app_context():
            frames = frames_of(video_id)
            assert len(frames) == FRAMES
            lost = [f.frame_index for f in frames if not (root / f.relpath).is_file()
                    or hashlib.sha256((root / f.relpath).read_bytes()).hexdigest() != f.sha256]
            assert lost == [], f"round {r}: frames {lost} of video {video_id} lost their file"
    with app.app_context():
        report = run_check()
        assert report.problems == 0 and report.files == ROUNDS * FRAMES, report.summary()
