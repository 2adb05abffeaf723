"""Writing a phantom data set: MP4 videos, lossless PNG frames and one COCO file.

Layout of ``DIR``::

    videos/video_0001.mp4          the sweep as a video (for the normal video import)
    images/video_0001/000000.png   every frame as lossless grey PNG (the training images)
    annotations.json               COCO: every frame is an image, box-free ones included

COCO ids start at 1 (pycocotools never matches an annotation with id 0); categories are
tumor = 1 and vessel = 2. Each image carries ``video_id``, ``frame_index``, ``prev_image_id``
(None on a video's first frame), ``scene_id`` (runs of ``scene_len`` consecutive frames,
numbered over the whole set) and ``patient_id`` (one per video, seed included, so sets made
with different seeds never share a patient). Each annotation carries ``track_id``
(``video_id * 1000 + object``: tumours 1.., vessel branches 101..), unique over the set.

The set is written into a hidden sibling folder and renamed into place at the end, so an
interrupted run never leaves a half-written ``DIR``. Videos are independent given the seed,
so ``workers`` processes render them in parallel with identical results.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .anatomy import CATEGORIES
from .video import PhantomVideo

GENERATOR = "sonolabel phantom"
_H264: bool | None = None


def video_codec(size: int = 512) -> str:
    """'avc1' (H.264 from libx264 through PyAV, as scanners record) when this build has the
    encoder and the size suits 4:2:0 chroma (even), else 'mp4v' (MPEG-4 part 2, OpenCV)."""
    global _H264
    if _H264 is None:
        import av

        try:
            av.codec.Codec("libx264", "w")
            _H264 = True
        except av.codec.codec.UnknownCodecError:
            _H264 = False
    return "avc1" if _H264 and size % 2 == 0 else "mp4v"


class _Mp4Writer:
    """Grey frames into an MP4 file, in the codec :func:`video_codec` chose."""

    def __init__(self, path: Path, codec: str, fps: float, size: int):
        self.codec = codec
        if codec == "avc1":
            import av

            self.container = av.open(str(path), "w")
            self.stream = self.container.add_stream(
                "libx264", rate=Fraction(fps).limit_denominator(1001),
                # One thread: the same seed gives the same file on any machine.
                options={"crf": "20", "preset": "superfast", "threads": "1"})
            self.stream.width = self.stream.height = size
            self.stream.pix_fmt = "yuv420p"
        else:
            self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps,
                                          (size, size), False)
            if not self.writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write {codec} MP4 files here")

    def write(self, grey: np.ndarray) -> None:
        if self.codec == "avc1":
            import av

            for packet in self.stream.encode(av.VideoFrame.from_ndarray(grey, format="gray")):
                self.container.mux(packet)
        else:
            self.writer.write(grey)

    def close(self) -> None:
        if self.codec == "avc1":
            for packet in self.stream.encode():  # flush the frames the encoder still holds
                self.container.mux(packet)
            self.container.close()
        else:
            self.writer.release()


def _render_video(job: dict, on_frame: Callable[[], None] | None = None) -> dict:
    """Render one video into ``job['root']``; returns its frames' boxes (picklable)."""
    root = Path(job["root"])
    name = f"video_{job['video_id']:04d}"
    vid = PhantomVideo.random(job["seed"], job["video_id"], job["frames"], job["size"],
                              job["probe"], job["fps"], job["min_box_mm"])
    (root / "images" / name).mkdir(parents=True, exist_ok=True)
    writer = _Mp4Writer(root / "videos" / f"{name}.mp4", job["codec"], job["fps"], job["size"])
    frames = []
    try:
        for k, (image, boxes) in enumerate(vid.frames()):
            file_name = f"{name}/{k:06d}.png"
            if not cv2.imwrite(str(root / "images" / file_name), image):
                raise OSError(f"could not write {file_name}")
            writer.write(image)
            frames.append({"file_name": file_name, "boxes": boxes})
            if on_frame:
                on_frame()
    finally:
        writer.close()
    return {"video_id": job["video_id"], "name": name, "frames": frames,
            "mm_per_px": vid.geom.mm_per_px}


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        marker = out / "annotations.json"
        is_phantom = False
        if marker.is_file():
            try:
                is_phantom = json.loads(marker.read_text()).get("info", {}).get(
                    "generator") == GENERATOR
            except (OSError, ValueError):
                pass
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty (use --overwrite, or "
                                  "overwrite=True, to replace a phantom set)")
        if not is_phantom:
            raise FileExistsError(f"{out} is not a phantom data set; refusing to replace it")


def generate(out_dir: str | os.PathLike, videos: int = 1, frames: int = 30, size: int = 512,
             seed: int = 0, *, probe: str = "convex", scene_len: int = 5, fps: float = 15.0,
             min_box_mm: float = 3.0, workers: int = 1, progress: bool = False,
             overwrite: bool = False) -> Path:
    """Write ``videos`` sweeps of ``frames`` frames into ``out_dir``; return the COCO path.

    A two-frame study calls e.g. ``generate(d / "train", 40, 60, 512, seed=1)`` and
    ``generate(d / "test", 30, 5, 512, seed=2)`` (30 held-out scenes of 5 frames).
    """
    if videos < 1 or frames < 1 or scene_len < 1 or workers < 1:
        raise ValueError("videos, frames, scene_len and workers must be at least 1")
    if not 32 <= size <= 4096:
        raise ValueError("size must be between 32 and 4096 pixels")
    if probe not in {"convex", "linear"}:
        raise ValueError(f"probe must be convex or linear, not {probe!r}")
    if fps <= 0 or min_box_mm < 0:
        raise ValueError("fps must be positive and min_box_mm not negative")
    out = Path(out_dir)
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "videos").mkdir(parents=True)
    codec = video_codec(size)
    jobs = [{"root": str(tmp), "video_id": i, "seed": int(seed), "frames": int(frames),
             "size": int(size), "probe": probe, "fps": float(fps), "min_box_mm": float(min_box_mm),
             "codec": codec} for i in range(1, videos + 1)]
    from tqdm import tqdm

    bar = tqdm(total=videos * frames, unit="frame", desc="phantom", disable=not progress)
    try:
        if workers == 1 or videos == 1:
            results = [_render_video(job, lambda: bar.update(1)) for job in jobs]
        else:
            results = []
            with ProcessPoolExecutor(min(workers, videos), mp_context=get_context("spawn"),
                                     initializer=_worker_init) as pool:
                for res in pool.map(_render_video, jobs):
                    results.append(res)
                    bar.update(frames)
        coco = _coco(results, seed=seed, size=size, probe=probe, fps=fps, codec=codec,
                     scene_len=scene_len, frames=frames, min_box_mm=min_box_mm)
        (tmp / "annotations.json").write_text(json.dumps(coco))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return out / "annotations.json"


def _coco(results: list[dict], *, seed: int, size: int, probe: str, fps: float, codec: str,
          scene_len: int, frames: int, min_box_mm: float) -> dict:
    images, annotations, video_list = [], [], []
    image_id = ann_id = scene_id = 0
    for res in sorted(results, key=lambda r: r["video_id"]):
        vid_id = res["video_id"]
        patient = f"phantom-{seed}-{vid_id:04d}"
        video_list.append({"id": vid_id, "file_name": f"videos/{res['name']}.mp4",
                           "patient_id": patient, "n_frames": len(res["frames"]), "fps": fps,
                           "width": size, "height": size})
        prev = None
        for k, frame in enumerate(res["frames"]):
            image_id += 1
            if k % scene_len == 0:
                scene_id += 1
            images.append({"id": image_id, "file_name": frame["file_name"], "width": size,
                           "height": size, "video_id": vid_id, "frame_index": k,
                           "prev_image_id": prev, "scene_id": scene_id, "patient_id": patient})
            prev = image_id
            for box in frame["boxes"]:
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id,
                                    "category_id": box["category_id"], "bbox": box["bbox"],
                                    "area": box["area"], "iscrowd": 0,
                                    "track_id": vid_id * 1000 + box["local_id"],
                                    "attributes": box["attributes"]})
    mm_per_px = results[0]["mm_per_px"] if results else None
    info = {"description": "SonoLabel synthetic liver sweeps (exact ground truth)",
            "generator": GENERATOR, "version": 1, "seed": int(seed), "size": int(size),
            "probe": probe, "fps": float(fps), "codec": codec, "scene_len": int(scene_len),
            "frames_per_video": int(frames), "videos": len(results),
            "min_box_mm": float(min_box_mm), "mm_per_px": mm_per_px}
    return {"info": info, "licenses": [], "categories": CATEGORIES, "videos": video_list,
            "images": images, "annotations": annotations}


def decoded_frame_count(path: str | os.PathLike) -> int:
    """Frames OpenCV actually decodes from a video (not the container's claim)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    try:
        while cap.read()[0]:
            n += 1
    finally:
        cap.release()
    return n
