"""Label Studio interchange, outward: the labeling config, tasks, and pushing them to a server.

Design choices:
- One converter, COCO -> tasks: a version's tasks come from its frozen COCO files (what the
  version froze, not today's labels), a scene's or video's from a COCO document built on the
  spot (pending model pre-labels included as predictions unless asked not to).
- A task per frame: ``data.image`` is ``image_prefix`` + the export file name, or a link
  ``labelstudio_images`` makes Label Studio's browsers able to load; ``data`` also
  carries ``video_id``, ``frame_index``, ``scene_id``, ``patient_code`` and the split, which
  Label Studio keeps untouched, so an export comes back to the right frames.
- Boxes are ``rectanglelabels`` in percent of the frame with ``original_width/height``. Manual
  and propagated boxes are the task's annotation; model boxes are ``predictions``, one per
  model version, each region with its ``score`` and the prediction with their mean. What the
  format has no place for (propagated source, track ids) sits in
  ``data.sonolabel_regions[<region id>]`` and is applied on import to the region of that id.
- A reviewed-empty frame is exported as an annotation with an empty result.
- Pushing to a server goes through ``label_studio_sdk``: create a project with the config,
  then import the tasks. Only http(s) URLs are accepted; failures become one clear message.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import urlparse
from xml.sax.saxutils import quoteattr

import sqlalchemy as sa

from ..db import db
from ..models import BoxSource, DatasetVersion, LabelClass, Scene, Video
from . import ServiceError
from .coco_export import build_coco, frames_of_scenes, frames_of_videos
from .input_checks import is_db_int
from .labelstudio_shapes import to_percent

FROM_NAME = "label"
TO_NAME = "image"


class LabelStudioRefused(ServiceError):
    """A Label Studio request that cannot be carried out."""


def class_labels(classes: list[tuple[str, str]] | None = None) -> str:
    """The ``<Label>`` lines of a labeling config: each class (name, colour) or the stored ones."""
    if classes is None:
        classes = list(db.session.execute(
            sa.select(LabelClass.name, LabelClass.color).order_by(LabelClass.id)))
    return "\n".join(f"    <Label value={quoteattr(name)} background={quoteattr(color)}/>"
                     for name, color in classes)


def labeling_config(classes: list[tuple[str, str]] | None = None) -> str:
    """The config that matches the exported tasks: one image, one RectangleLabels per class."""
    labels = class_labels(classes)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n'
            "  </RectangleLabels>\n</View>\n")


def coco_to_tasks(doc: dict[str, Any], image_prefix: str = "", split: str | None = None,
                  predictions: bool = True) -> list[dict[str, Any]]:
    """Label Studio tasks for the images of a COCO document written by ``coco_export``;
    ``predictions=False`` leaves the pending model pre-labels out."""
    names = {c["id"]: c["name"] for c in doc["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in doc["annotations"]:
        by_image[ann["image_id"]].append(ann)
    tasks = []
    for img in doc["images"]:
        W, H = img["width"], img["height"]
        manual: list[dict[str, Any]] = []
        predicted: dict[str, list[dict[str, Any]]] = defaultdict(list)
        meta: dict[str, dict[str, Any]] = {}
        for ann in by_image.get(img["id"], ()):
            if not predictions and ann.get("source") == BoxSource.model.value:
                continue
            # b<box id>: the stored box, so a re-import updates it rather than adding a copy.
            rid = f"b{ann['box_id']}" if ann.get("box_id") is not None else f"a{ann['id']}"
            x, y, w, h = ann["bbox"]
            item = {"id": rid, "type": "rectanglelabels", "from_name": FROM_NAME,
                    "to_name": TO_NAME, "original_width": W, "original_height": H,
                    "image_rotation": 0,
                    "value": {**to_percent(x, y, w, h, W, H), "rotation": 0,
                              "rectanglelabels": [names[ann["category_id"]]]}}
            source = ann.get("source", "manual")
            region = {"source": source}
            if ann.get("box_id") is not None:
                region["box_id"] = ann["box_id"]
            if ann.get("track_id") is not None:
                region["track_id"] = ann["track_id"]
            if source == BoxSource.model.value:
                if ann.get("score") is not None:
                    item["score"] = ann["score"]
                predicted[ann.get("model_version") or ""].append(item)
            else:
                manual.append(item)
            meta[rid] = region
        data = {"image": image_prefix + img["file_name"], "video_id": img.get("video_id"),
                "frame_index": img.get("frame_index"), "scene_id": img.get("scene_id"),
                "patient_code": img.get("patient_code"), "sonolabel_regions": meta}
        if split is not None:
            data["split"] = split
        task: dict[str, Any] = {"data": data}
        if manual or img.get("reviewed_empty"):
            task["annotations"] = [{"result": manual, "ground_truth": False}]
        if predicted:
            task["predictions"] = []
            for version, items in sorted(predicted.items()):
                scores = [i["score"] for i in items if "score" in i]
                pred: dict[str, Any] = {"model_version": version, "result": items}
                if scores:
                    pred["score"] = sum(scores) / len(scores)
                task["predictions"].append(pred)
        tasks.append(task)
    return tasks


def version_tasks(version: DatasetVersion, image_prefix: str = "") -> list[dict[str, Any]]:
    from .dataset_versions import load_parts

    tasks: list[dict[str, Any]] = []
    for part, doc in load_parts(version).items():
        tasks.extend(coco_to_tasks(doc, image_prefix, split=part))
    return tasks


def scene_tasks(scene_id: int, image_prefix: str = "", predictions: bool = True
                ) -> list[dict[str, Any]]:
    """Tasks for a scene as it is now (every stored frame of it), its pending model pre-labels
    as predictions with their scores and model versions unless ``predictions`` is false."""
    if not is_db_int(scene_id, 1) or db.session.get(Scene, scene_id) is None:
        raise LabelStudioRefused(f"No scene {scene_id}.", status=404)
    doc = build_coco({"scene": frames_of_scenes([scene_id])})["scene"]
    return coco_to_tasks(doc, image_prefix, predictions=predictions)


def video_tasks(video_id: int, image_prefix: str = "", predictions: bool = True
                ) -> list[dict[str, Any]]:
    """Tasks for every stored frame of a video as it is now, like :func:`scene_tasks`."""
    if not is_db_int(video_id, 1) or db.session.get(Video, video_id) is None:
        raise LabelStudioRefused(f"No video {video_id}.", status=404)
    doc = build_coco({"video": frames_of_videos([video_id]).get(video_id, [])})["video"]
    return coco_to_tasks(doc, image_prefix, predictions=predictions)


def push(url: str, token: str, title: str, tasks: list[dict[str, Any]], config: str,
         timeout: float = 30.0, retries: int = 2) -> int:
    """Create a project on a Label Studio server and import the tasks; its id."""
    parsed = urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise LabelStudioRefused(f"{url!r} is not a Label Studio address (http:// or https://).")
    if not token:
        raise LabelStudioRefused("A Label Studio access token is needed (--token or "
                                 "LABEL_STUDIO_API_KEY).")
    import httpx
    from label_studio_sdk import LabelStudio
    from label_studio_sdk.core.api_error import ApiError

    client = LabelStudio(base_url=url.rstrip("/"), api_key=token, timeout=timeout,
                         max_retries=retries)
    try:
        project = client.projects.create(title=title, label_config=config)
        client.projects.import_tasks(id=project.id, request=tasks)
    except ApiError as err:
        body = str(err.body)[:200]
        raise LabelStudioRefused(f"Label Studio at {url} answered {err.status_code}: {body}",
                                 status=502) from None
    except (httpx.HTTPError, ValueError) as err:
        raise LabelStudioRefused(f"Could not reach Label Studio at {url}: {err}", status=502) from None
    return int(project.id)
