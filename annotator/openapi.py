"""The OpenAPI 3.0 document of /api/, written by hand as data.

Hand-written rather than generated (apispec, flask-smorest): the API is small, its payloads are
plain dicts validated in ``services.box_edits``, and generators would add marshmallow schemas that
duplicate that validation. Drift is caught by tests instead: every /api/ rule of the URL map
must appear here with its methods, and real responses are validated against these schemas.
"""
from __future__ import annotations

from typing import Any

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any], text: str = "OK") -> dict[str, Any]:
    return {"description": text, **_json(schema)}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _INT}


def _query(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


_ERRORS = {
    "400": {"description": "Bad input or missing CSRF token; nothing was written", **_json(_ref("Error"))},
    "401": {"description": "Not logged in", **_json(_ref("Error"))},
    "403": {"description": "The user's role may not do this", **_json(_ref("Error"))},
    "404": {"description": "No such object", **_json(_ref("Error"))},
}
_CONFLICT = {"409": {"description": "Stale row_version, or the scene is locked; nothing was written. "
                                    "`box` holds the saved box when there is one.",
                     **_json(_ref("Error"))}}
_EDIT_NOTE = ("Role annotator or admin. Send the CSRF token in `X-CSRFToken`. "
              "Writes one label_event per change.")


def _op(summary: str, responses: dict[str, Any], *, params: list | None = None,
        body: dict[str, Any] | None = None, write: bool = False, tag: str = "labels") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {**responses, **_ERRORS}}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    if write:
        op["description"] = _EDIT_NOTE
        op["responses"].update(_CONFLICT)
    return op


def spec() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": _STR, "box": {"oneOf": [_ref("Box")]}}},
        "Box": {"type": "object", "required": ["id", "frame_id", "class_id", "x", "y", "w", "h",
                                               "source", "row_version"],
                "properties": {
                    "id": _INT, "frame_id": _INT, "class_id": _INT, "x": _NUM, "y": _NUM,
                    "w": _NUM, "h": _NUM,
                    "source": {"type": "string", "enum": ["manual", "model", "propagated"]},
                    "score": {"type": "number", "nullable": True},
                    "model_version": {"type": "string", "nullable": True},
                    "track_id": {"type": "integer", "nullable": True},
                    "author_id": {"type": "integer", "nullable": True},
                    "author": {"type": "string", "nullable": True},
                    "row_version": {**_INT, "description": "Send it back on every change (optimistic lock)"},
                }},
        "NewBox": {"type": "object", "required": ["class_id", "x", "y", "w", "h"], "properties": {
            "class_id": _INT, "x": _NUM, "y": _NUM, "w": {**_NUM, "exclusiveMinimum": 0},
            "h": {**_NUM, "exclusiveMinimum": 0}},
            "description": "Pixels of the stored frame; the box must lie inside it."},
        "BoxChange": {"type": "object", "required": ["row_version"], "properties": {
            "row_version": _INT, "class_id": _INT, "x": _NUM, "y": _NUM, "w": _NUM, "h": _NUM}},
        "Version": {"type": "object", "required": ["row_version"], "properties": {"row_version": _INT}},
        "SceneSummary": {"type": "object", "required": ["id", "status"], "properties": {
            "id": _INT, "video_id": _INT, "patient": _STR, "first_frame": _INT, "last_frame": _INT,
            "status": {"type": "string", "enum": ["new", "in_progress", "submitted", "reviewed", "returned"]},
            "assignee": {"type": "string", "nullable": True}, "review_comment": _STR,
            "updated_at": {"type": "string", "nullable": True}, "fps": _NUM}},
        "Change": {"type": "object", "required": ["box", "event_ids", "scene"], "properties": {
            "box": {"allOf": [_ref("Box")], "nullable": True},
            "event_ids": {"type": "array", "items": _INT},
            "undo_ids": {"type": "array", "items": _INT,
                         "description": "The box and \"no findings\" mark events of this change; "
                                        "send them to /api/events/revert to undo it"},
            "scene": {"allOf": [_ref("SceneSummary")], "nullable": True},
            "boxes": {"type": "array", "items": _ref("Box")},
            "reviewed_empty": {"type": "boolean"}}},
        "Frame": {"type": "object", "required": ["id", "index", "width", "height", "image_url"],
                  "properties": {"id": _INT, "index": _INT, "timestamp_ms": _NUM, "width": _INT,
                                 "height": _INT, "reviewed_empty": {"type": "boolean"},
                                 "image_url": _STR}},
        "LabelClass": {"type": "object", "required": ["id", "name", "color", "hotkey"], "properties": {
            "id": _INT, "name": _STR, "color": _STR, "hotkey": _INT}},
        "Scene": {"type": "object", "required": ["scene", "classes", "frames", "boxes", "permissions"],
                  "properties": {
                      "scene": _ref("SceneSummary"),
                      "classes": {"type": "array", "items": _ref("LabelClass")},
                      "frames": {"type": "array", "items": _ref("Frame")},
                      "boxes": {"type": "object", "description": "Boxes keyed by frame id",
                                "additionalProperties": {"type": "array", "items": _ref("Box")}},
                      "review": {"type": "object", "description":
                                 "origins: per box id drawn/accepted/edited/pending (with IoU to the "
                                 "model's box); rejected: per frame id the rejected pre-labels"},
                      "permissions": {"type": "object", "properties": {
                          "edit": {"type": "boolean"}, "review": {"type": "boolean"},
                          "submit": {"type": "boolean"}}},
                      "user": {"type": "object"}}},
        "Event": {"type": "object", "required": ["id", "at", "action", "source"], "properties": {
            "id": _INT, "at": _STR, "user": {"type": "string", "nullable": True},
            "scene_id": {"type": "integer", "nullable": True},
            "frame_id": {"type": "integer", "nullable": True},
            "box_id": {"type": "integer", "nullable": True}, "action": _STR, "source": _STR,
            "before": {"type": "object", "nullable": True},
            "after": {"type": "object", "nullable": True}}},
        "ModelFeedback": {"type": "object", "required": ["model_version", "accepted", "rejected", "pending"],
                          "properties": {"model_version": {"type": "string", "nullable": True},
                                         "accepted": _INT, "rejected": _INT, "pending": _INT,
                                         "acceptance_rate": {"type": "number", "nullable": True}}},
    }
    change = _ok(_ref("Change"))
    paths: dict[str, Any] = {
        "/api/scenes": {"get": _op(
            "List scenes, newest change first", {"200": _ok({"type": "object", "properties": {
                "scenes": {"type": "array", "items": _ref("SceneSummary")}}})},
            params=[_query("status", _STR, "new, in_progress, submitted, reviewed or returned"),
                    _query("video_id", _INT, "one video"), _query("patient", _STR, "patient code"),
                    _query("assignee", _STR, "user name; '-' for unassigned")], tag="scenes")},
        "/api/scenes/{scene_id}": {"get": _op(
            "A scene with its frames, boxes, classes and review notes", {"200": _ok(_ref("Scene"))},
            params=[_path_id("scene_id")], tag="scenes")},
        "/api/scenes/{scene_id}/status": {"post": _op(
            "Move the scene: new→in_progress→submitted→reviewed|returned "
            "(annotators submit, reviewers accept or return with a comment)", {"200": change},
            params=[_path_id("scene_id")], write=True, tag="scenes",
            body={"type": "object", "required": ["status"], "properties": {
                "status": {"type": "string", "enum": ["in_progress", "submitted", "reviewed", "returned"]},
                "comment": {**_STR, "description": "Required when returning"}}})},
        "/api/scenes/{scene_id}/events": {"get": _op(
            "The scene's label events, newest first", {"200": _ok({"type": "object", "properties": {
                "events": {"type": "array", "items": _ref("Event")}}})},
            params=[_path_id("scene_id"), _query("frame_id", _INT, "only this frame")], tag="audit")},
        "/api/frames/{frame_id}/boxes": {
            "get": _op("The boxes of one frame (reloaded after a 409)", {"200": _ok({
                "type": "object", "properties": {"frame_id": _INT, "reviewed_empty": {"type": "boolean"},
                                                 "boxes": {"type": "array", "items": _ref("Box")}}})},
                params=[_path_id("frame_id")]),
            "post": _op("Draw a manual box", {"201": _ok(_ref("Change"), "Created")},
                        params=[_path_id("frame_id")], body=_ref("NewBox"), write=True)},
        "/api/boxes/{box_id}": {
            "patch": _op("Move, resize or re-class a box (editing a pre-label accepts it)",
                         {"200": change}, params=[_path_id("box_id")], body=_ref("BoxChange"), write=True),
            "delete": _op("Delete a box (a pre-label is recorded as rejected)", {"200": change},
                          params=[_path_id("box_id")], body=_ref("Version"), write=True)},
        "/api/boxes/{box_id}/accept": {"post": _op(
            "Accept a pre-label as a manual box", {"200": change}, params=[_path_id("box_id")],
            body=_ref("Version"), write=True)},
        "/api/boxes/{box_id}/reject": {"post": _op(
            "Reject (remove) a pre-label", {"200": change}, params=[_path_id("box_id")],
            body=_ref("Version"), write=True)},
        "/api/frames/{frame_id}/accept-above": {"post": _op(
            "Accept every pre-label of the frame scoring at least the threshold", {"200": change},
            params=[_path_id("frame_id")], write=True,
            body={"type": "object", "required": ["threshold"], "properties": {
                "threshold": {"type": "number", "minimum": 0, "maximum": 1}}})},
        "/api/frames/{frame_id}/no-findings": {"post": _op(
            "Mark the frame reviewed-empty (its remaining pre-labels are rejected) or clear the mark",
            {"200": change}, params=[_path_id("frame_id")], write=True,
            body={"type": "object", "required": ["empty"], "properties": {"empty": {"type": "boolean"}}})},
        "/api/scenes/assign": {"post": {**_op(
            "Give scenes to an annotator, or to nobody; all or none",
            {"200": {"description": "The scenes and their assignees", **_json({
                "type": "object", "required": ["scenes"], "properties": {"scenes": {
                    "type": "array", "items": {"type": "object", "required": ["id", "assignee"],
                                               "properties": {"id": _INT, "assignee": {
                                                   "type": "string", "nullable": True}}}}}})}},
            body={"type": "object", "required": ["scene_ids", "assignee"], "properties": {
                "scene_ids": {"type": "array", "items": _INT, "minItems": 1},
                "assignee": {"type": "string", "nullable": True}}}),
            "description": "Role data_manager or admin. Send the CSRF token in `X-CSRFToken`. "
                           "Writes one label_event per scene whose assignee changes."}},
        "/api/events/revert": {"post": _op(
            "Undo recorded box and \"no findings\" mark events (a redo reverts the revert); all or none", {"200": change},
            write=True, body={"type": "object", "required": ["event_ids"], "properties": {
                "event_ids": {"type": "array", "items": _INT, "minItems": 1}}})},
        "/api/model-feedback": {"get": _op(
            "Accepted, rejected and pending pre-labels per model version",
            {"200": _ok({"type": "object", "properties": {
                "versions": {"type": "array", "items": _ref("ModelFeedback")}}})},
            params=[_query("scene_id", _INT, "only this scene")], tag="models")},
        "/api/openapi.json": {"get": _op("This document", {"200": _ok({"type": "object"})}, tag="meta")},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "SonoLabel labelling API", "version": "1.0",
                 "description": "Session cookie authentication (log in at /login). Every state-changing "
                                "request needs the CSRF token of the page's `csrf-token` meta tag in "
                                "the `X-CSRFToken` header."},
        "paths": paths,
        "components": {"schemas": schemas},
    }
