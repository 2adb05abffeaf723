"""The OpenAPI 3.0 document of /api/, written by hand as data.

Hand-written rather than generated (apispec, flask-smorest): the API is small, its payloads are
plain dicts validated in ``services.box_edits``, and generators would add marshmallow schemas that
duplicate that validation. Drift is caught by tests instead: every /api/ rule of the URL map
must appear here with its methods, the document is checked against the OpenAPI 3.0 schema, and
schemathesis sends generated requests and checks each answer's status and body against it.

Every answer is described, errors included: each operation lists the codes it can give (400 bad
input or CSRF, 401 not logged in, 403 role or assignment, 404 no such object, 409 stale version
or locked scene, 413 body too large), all with the body ``{"error": message}``.
"""
from __future__ import annotations

from typing import Any

from .request_args import JSON_BODY_MAX
from .services.input_checks import DB_INT_MAX
from .services.undo import MAX_REVERT

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_ID = {"type": "integer", "minimum": 1, "maximum": DB_INT_MAX}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any], text: str = "OK") -> dict[str, Any]:
    return {"description": text, **_json(schema)}


def _path_id(name: str) -> dict[str, Any]:
    # The URL converter takes 0 up to the id columns' maximum; anything else matches no route.
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 0, "maximum": DB_INT_MAX}}


def _query(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


_ERROR_TEXT = {
    "400": "Bad input (the message names the field) or a missing CSRF token; nothing was written",
    "401": "Not logged in",
    "403": "The user's role may not do this, or the scene is assigned to someone else",
    "404": "No such object",
    "409": "Stale row_version, or the scene is locked for review; nothing was written. "
           "`box` holds the saved box when there is one.",
    "413": f"The body is larger than {JSON_BODY_MAX // 1024} kB",
}
_WRITE_NOTE = ("Role annotator or admin. Send the CSRF token in `X-CSRFToken`. "
               "Writes one label_event per change.")
_SESSION = [{"session": []}]
_SESSION_CSRF = [{"session": [], "csrf": []}]


def _op(op_id: str, summary: str, responses: dict[str, Any], *, params: list | None = None,
        body: dict[str, Any] | None = None, errors: str = "", write: bool = False,
        tag: str = "labels", note: str = "") -> dict[str, Any]:
    """One operation. Its error answers: 401 always; 400 with a body or query parameters;
    404 with path ids; ``errors`` adds more (e.g. "403 409"); ``write`` means a labelling
    change (403, 409, CSRF)."""
    codes = {"401"} | set(errors.split())
    if body is not None:
        codes |= {"400", "413"}
    if any(p["in"] == "query" for p in params or ()):
        codes.add("400")
    if any(p["in"] == "path" for p in params or ()):
        codes.add("404")
    if write:
        codes |= {"403", "409"}
    op: dict[str, Any] = {
        "operationId": op_id, "summary": summary, "tags": [tag],
        "security": _SESSION_CSRF if body is not None else _SESSION,
        "responses": {**responses, **{c: {"description": _ERROR_TEXT[c], **_json(_ref("Error"))}
                                      for c in sorted(codes)}}}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    if note or write:
        op["description"] = note or _WRITE_NOTE
    return op


def _links(**targets: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: {"operationId": op_id, **rest} for name, (op_id, rest) in targets.items()}


_FROM_BOX = {"parameters": {"box_id": "$response.body#/box/id"},
             "requestBody": {"row_version": "$response.body#/box/row_version"}}


def _schemas() -> dict[str, Any]:
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {**_STR, "description": "What was wrong, naming the field"},
            "box": {"allOf": [_ref("Box")], "description": "With a 409: the box as saved"}}},
        "Box": {"type": "object", "required": ["id", "frame_id", "class_id", "x", "y", "w", "h",
                                               "source", "row_version"],
                "properties": {
                    "id": _INT, "frame_id": _INT, "class_id": _INT, "x": _NUM, "y": _NUM,
                    "w": _NUM, "h": _NUM,
                    "source": {"type": "string", "enum": ["manual", "model", "propagated"]},
                    "score": _nullable(_NUM), "model_version": _nullable(_STR),
                    "track_id": _nullable(_INT), "author_id": _nullable(_INT),
                    "author": _nullable(_STR),
                    "row_version": {**_INT, "description": "Send it back on every change (optimistic lock)"},
                }},
        "NewBox": {"type": "object", "required": ["class_id", "x", "y", "w", "h"], "properties": {
            "class_id": _ID, "x": _NUM, "y": _NUM,
            "w": {**_NUM, "minimum": 0, "exclusiveMinimum": True},
            "h": {**_NUM, "minimum": 0, "exclusiveMinimum": True},
            "track_id": {**_ID, "description": "An existing track of the scene to add the box "
                                               "to; left out, the box starts a new track"}},
            "description": "Pixels of the stored frame; the box must lie inside it (half a pixel "
                           "of slack is cut off) and keep at least half a pixel a side."},
        "BoxChange": {"type": "object", "required": ["row_version"], "properties": {
            "row_version": _INT, "class_id": _ID, "x": _NUM, "y": _NUM,
            "w": {**_NUM, "minimum": 0, "exclusiveMinimum": True},
            "h": {**_NUM, "minimum": 0, "exclusiveMinimum": True}},
            "description": "class_id and/or any of x, y, w, h; the rest keep their values."},
        "Version": {"type": "object", "required": ["row_version"], "properties": {"row_version": _INT}},
        "SceneSummary": {"type": "object", "required": ["id", "status"], "properties": {
            "id": _INT, "video_id": _INT, "patient": _STR, "first_frame": _INT, "last_frame": _INT,
            "status": {"type": "string", "enum": ["new", "in_progress", "submitted", "reviewed", "returned"]},
            "assignee": _nullable(_STR), "review_comment": _STR, "updated_at": _nullable(_STR),
            "fps": _NUM}},
        "Change": {"type": "object", "required": ["box", "event_ids", "scene"], "properties": {
            "box": {"allOf": [_ref("Box")], "nullable": True},
            "event_ids": {"type": "array", "items": _INT},
            "undo_ids": {"type": "array", "items": _INT,
                         "description": "The box and \"no findings\" mark events of this change; "
                                        "send them to /api/events/revert to undo it"},
            "scene": {"allOf": [_ref("SceneSummary")], "nullable": True},
            "boxes": {"type": "array", "items": _ref("Box")},
            "reviewed_empty": _BOOL}},
        "Track": {"type": "object", "required": ["track_id", "class_id", "frames", "keyframes",
                                                 "pending", "accepted", "state"], "properties": {
            "track_id": _INT, "class_id": _nullable(_INT), "class_ids": {"type": "array", "items": _INT},
            "frames": {"type": "array", "items": _INT, "description": "Frame numbers it covers"},
            "keyframes": {"type": "array", "items": _INT, "description": "Frames with a drawn box"},
            "pending": {"type": "array", "items": _INT,
                        "description": "Frames with a propagated box or pre-label to decide"},
            "accepted": {"type": "array", "items": _INT,
                         "description": "Frames accepted with the whole track"},
            "state": {"type": "string", "enum": ["suggestions pending", "accepted"]}}},
        "FuseOffer": {"type": "object", "required": ["frame_id", "frame_index", "box_id", "prelabel_id",
                                                     "track_id", "class_id", "x", "y", "w", "h"],
                      "description": "A pending pre-label of a track's class overlapping its propagated "
                                     "box (IoU >= 0.5): the detector's edges, the track's identity",
                      "properties": {"frame_id": _INT, "frame_index": _INT, "box_id": _INT,
                                     "prelabel_id": _INT, "track_id": _INT, "class_id": _INT,
                                     "score": _nullable(_NUM), "x": _NUM, "y": _NUM, "w": _NUM, "h": _NUM}},
        "TrackChange": {"allOf": [_ref("Change"), {"type": "object", "required": ["tracks", "scene_boxes"],
                                                   "properties": {
            "tracks": {"type": "array", "items": _ref("Track")},
            "offers": {"type": "array", "items": _ref("FuseOffer")},
            "new_track_id": _INT,
            "retired": {**_INT, "description": "Accept: pending pre-labels without a track that "
                        "overlapped the track's boxes (IoU >= 0.5, its class), removed as "
                        "duplicates (replace events, not rejections)"},
            "scene_boxes": {"type": "object", "description": "The scene's boxes keyed by frame id",
                            "additionalProperties": {"type": "array", "items": _ref("Box")}}}}]},
        "Frame": {"type": "object", "required": ["id", "index", "width", "height", "image_url"],
                  "properties": {"id": _INT, "index": _INT, "timestamp_ms": _NUM, "width": _INT,
                                 "height": _INT, "reviewed_empty": _BOOL, "image_url": _STR}},
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
                                 "model's box); rejected: per frame id the rejected pre-labels",
                                 "properties": {"origins": {"type": "object"},
                                                "rejected": {"type": "object"}}},
                      "coverage": {"type": "array", "description":
                                   "Per frame: manual boxes, undecided pre-labels or propagated "
                                   "boxes, the no-findings mark, and its state "
                                   "(boxes/empty/undecided/missing)",
                                   "items": {"type": "object", "properties": {
                                       "frame_id": _INT, "index": _INT, "boxes": _INT,
                                       "undecided": _INT, "pre_labels": _INT,
                                       "propagated": _INT, "empty": _BOOL, "state": {
                                           "type": "string",
                                           "enum": ["boxes", "empty", "undecided", "missing"]}}}},
                      "permissions": {"type": "object", "properties": {
                          "edit": _BOOL, "review": _BOOL, "submit": _BOOL}},
                      "prelabel_threshold": _nullable({
                          "type": "object", "description":
                          "The score threshold slider's start: the validation-F1 threshold "
                          "(calibrated scores) of the model that made most of the scene's "
                          "pre-labels, else of the active model; null when it has none",
                          "properties": {"model_version": _STR, "value": _NUM}}),
                      "user": {"type": "object", "properties": {
                          "id": _INT, "username": _STR, "role": _STR}}}},
        "Event": {"type": "object", "required": ["id", "at", "action", "source"], "properties": {
            "id": _INT, "at": _STR, "user": _nullable(_STR), "scene_id": _nullable(_INT),
            "frame_id": _nullable(_INT), "box_id": _nullable(_INT), "action": _STR, "source": _STR,
            "before": _nullable({"type": "object"}), "after": _nullable({"type": "object"})}},
        "ModelFeedback": {"type": "object", "required": ["model_version", "accepted", "rejected", "pending"],
                          "properties": {"model_version": _nullable(_STR), "accepted": _INT,
                                         "rejected": _INT, "pending": _INT,
                                         "acceptance_rate": _nullable(_NUM)}},
    }


def _paths() -> dict[str, Any]:
    change = _ok(_ref("Change"))
    track_change = {"200": _ok(_ref("TrackChange"))}
    box_id = [_path_id("box_id")]
    frame_id = [_path_id("frame_id")]
    scene_id = [_path_id("scene_id")]
    created = {"description": "Created", **_json(_ref("Change")), "links": _links(
        UpdateBox=("updateBox", _FROM_BOX), DeleteBox=("deleteBox", _FROM_BOX),
        UndoCreate=("revertEvents", {"requestBody": {"event_ids": "$response.body#/undo_ids"}}))}
    return {
        "/api/scenes": {"get": _op(
            "listScenes", "List scenes, newest change first", {"200": _ok({
                "type": "object", "required": ["scenes"], "properties": {
                    "scenes": {"type": "array", "items": _ref("SceneSummary")}}})},
            params=[_query("status", {"type": "string", "enum": [
                        "new", "in_progress", "submitted", "reviewed", "returned"]}, "one status"),
                    _query("video_id", _ID, "one video"), _query("patient", _STR, "patient code"),
                    _query("assignee", _STR, "user name; '-' for unassigned")], tag="scenes")},
        "/api/scenes/{scene_id}": {"get": _op(
            "getScene", "A scene with its frames, boxes, classes and review notes",
            {"200": _ok(_ref("Scene"))}, params=scene_id, tag="scenes")},
        "/api/scenes/{scene_id}/status": {"post": _op(
            "changeSceneStatus", "Move the scene: new→in_progress→submitted→reviewed|returned "
            "(annotators submit, reviewers accept or return with a comment)", {"200": change},
            params=scene_id, errors="403 409", tag="scenes",
            note="Role annotator, reviewer or admin, as the move allows. Send the CSRF token in "
                 "`X-CSRFToken`. Submitting is refused (409, `unfinished_frames`) while a frame "
                 "has no box and no \"no findings\" mark or keeps an undecided pre-label. "
                 "Writes one label_event (two with an override).",
            body={"type": "object", "required": ["status"], "properties": {
                "status": {"type": "string", "enum": ["in_progress", "submitted", "reviewed", "returned"]},
                "comment": {**_STR, "maxLength": 5000, "description": "Required when returning"},
                "override": {**_STR, "maxLength": 5000, "description":
                             "Admins only, when submitting: the reason to submit although frames "
                             "are unfinished (else 409 naming them), audited as override_gate"}}})},
        "/api/scenes/{scene_id}/events": {"get": _op(
            "sceneEvents", "The scene's label events, newest first", {"200": _ok({
                "type": "object", "required": ["events"], "properties": {
                    "events": {"type": "array", "items": _ref("Event")}}})},
            params=[*scene_id, _query("frame_id", _ID, "only this frame")], tag="audit")},
        "/api/scenes/{scene_id}/tracks": {"get": _op(
            "sceneTracks", "The scene's tracks (one object each): class, frames, keyframes, state",
            {"200": _ok({"type": "object", "required": ["tracks", "offers"], "properties": {
                "tracks": {"type": "array", "items": _ref("Track")},
                "offers": {"type": "array", "items": _ref("FuseOffer")}}})},
            params=scene_id, tag="tracks")},
        "/api/scenes/{scene_id}/tracks/class": {"post": _op(
            "trackClass", "Give every box of a track one class", track_change, params=scene_id,
            write=True, tag="tracks", body={"type": "object", "required": ["track_id", "class_id"],
                                            "properties": {"track_id": _ID, "class_id": _ID}})},
        "/api/scenes/{scene_id}/tracks/accept": {"post": _op(
            "trackAccept", "Accept a track's propagated boxes and pre-labels on a span of frames "
            "(default: all) as manual boxes; audited as one accept_track event listing the frames. "
            "Pending pre-labels without a track overlapping the track's boxes there are retired",
            track_change, params=scene_id, write=True, tag="tracks", body={
                "type": "object", "required": ["track_id"], "properties": {
                    "track_id": _ID, "from_frame": {**_INT, "minimum": 0},
                    "to_frame": {**_INT, "minimum": 0}}})},
        "/api/scenes/{scene_id}/tracks/split": {"post": _op(
            "trackSplit", "Move a track's boxes from a frame on to a new track", track_change,
            params=scene_id, write=True, tag="tracks", body={
                "type": "object", "required": ["track_id", "frame_index"], "properties": {
                    "track_id": _ID, "frame_index": {**_INT, "minimum": 0}}})},
        "/api/scenes/{scene_id}/tracks/fuse": {"post": _op(
            "trackFuse", "Accept a fused-box offer: the pre-label becomes the track's box on its "
            "frame (accepted, with the detector's edges) and the propagated box is replaced",
            track_change, params=scene_id, write=True, tag="tracks", body={
                "type": "object", "required": ["box_id", "prelabel_id"], "properties": {
                    "box_id": _ID, "prelabel_id": _ID}})},
        "/api/scenes/{scene_id}/tracks/merge": {"post": _op(
            "trackMerge", "Move the boxes of track `other` into `track_id` (refused, 409, where "
            "both have a box on one frame or their classes differ)", track_change,
            params=scene_id, write=True, tag="tracks", body={
                "type": "object", "required": ["track_id", "other"], "properties": {
                    "track_id": _ID, "other": _ID}})},
        "/api/frames/{frame_id}/boxes": {
            "get": _op("frameBoxes", "The boxes of one frame (reloaded after a 409)", {"200": _ok({
                "type": "object", "required": ["frame_id", "reviewed_empty", "boxes"], "properties": {
                    "frame_id": _INT, "reviewed_empty": _BOOL,
                    "boxes": {"type": "array", "items": _ref("Box")}}})}, params=frame_id),
            "post": _op("createBox", "Draw a manual box", {"201": created}, params=frame_id,
                        body=_ref("NewBox"), write=True)},
        "/api/boxes/{box_id}": {
            "patch": _op("updateBox", "Move, resize or re-class a box (editing a pre-label accepts it)",
                         {"200": change}, params=box_id, body=_ref("BoxChange"), write=True),
            "delete": _op("deleteBox", "Delete a box (a pre-label is recorded as rejected)",
                          {"200": change}, params=box_id, body=_ref("Version"), write=True)},
        "/api/boxes/{box_id}/accept": {"post": _op(
            "acceptBox", "Accept a pre-label as a manual box", {"200": change}, params=box_id,
            body=_ref("Version"), write=True)},
        "/api/boxes/{box_id}/reject": {"post": _op(
            "rejectBox", "Reject (remove) a pre-label", {"200": change}, params=box_id,
            body=_ref("Version"), write=True)},
        "/api/frames/{frame_id}/accept-above": {"post": _op(
            "acceptAbove", "Accept every pre-label of the frame scoring at least the threshold",
            {"200": _ok({"allOf": [_ref("Change")], "required": ["boxes"]})}, params=frame_id,
            write=True, body={"type": "object", "required": ["threshold"], "properties": {
                "threshold": {"type": "number", "minimum": 0, "maximum": 1}}})},
        "/api/scenes/{scene_id}/pre-labels/reject": {"post": _op(
            "rejectPendingPreLabels", "Reject every pending pre-label of the scene that no track "
            "holds (shown or below the score threshold): the detector's false positives once the "
            "objects are labelled; one undo", {"200": _ok({"allOf": [_ref("TrackChange"), {
                "type": "object", "required": ["rejected", "frames"], "properties": {
                    "rejected": _INT, "frames": {"type": "array", "items": _INT,
                                                 "description": "the frames (index) it touched"}}}]})},
            params=scene_id, write=True, errors="404 409",
            body={"type": "object", "required": ["count"], "properties": {"count": {
                "type": "integer", "minimum": 0,
                "description": "how many the person confirmed; 409 when the scene holds another number"}}})},
        "/api/frames/{frame_id}/no-findings": {"post": _op(
            "noFindings", "Mark the frame reviewed-empty (its remaining pre-labels are rejected) "
            "or clear the mark", {"200": _ok({"allOf": [_ref("Change")], "required": ["reviewed_empty"]})},
            params=frame_id, write=True,
            body={"type": "object", "required": ["empty"], "properties": {"empty": _BOOL}})},
        "/api/scenes/assign": {"post": _op(
            "assignScenes", "Give scenes to an annotator, or to nobody; all or none",
            {"200": _ok({"type": "object", "required": ["scenes"], "properties": {"scenes": {
                "type": "array", "items": {"type": "object", "required": ["id", "assignee"],
                                           "properties": {"id": _INT, "assignee": _nullable(_STR)}}}}},
                        "The scenes and their assignees")},
            errors="403 404", tag="scenes",
            note="Role data_manager or admin. Send the CSRF token in `X-CSRFToken`. "
                 "Writes one label_event per scene whose assignee changes.",
            body={"type": "object", "required": ["scene_ids", "assignee"], "properties": {
                "scene_ids": {"type": "array", "items": _ID, "minItems": 1, "maxItems": 10_000},
                "assignee": _nullable(_STR)}})},
        "/api/events/revert": {"post": _op(
            "revertEvents", "Undo recorded box and \"no findings\" mark events (a redo reverts "
            "the revert); all or none", {"200": change}, errors="404", write=True,
            body={"type": "object", "required": ["event_ids"], "properties": {
                "event_ids": {"type": "array", "items": _ID, "minItems": 1, "maxItems": MAX_REVERT}}})},
        "/api/model-feedback": {"get": _op(
            "modelFeedback", "Accepted, rejected and pending pre-labels per model version",
            {"200": _ok({"type": "object", "required": ["versions"], "properties": {
                "versions": {"type": "array", "items": _ref("ModelFeedback")}}})},
            params=[_query("scene_id", _ID, "only this scene")], tag="models")},
        "/api/openapi.json": {"get": _op("openapi", "This document", {"200": _ok({"type": "object"})},
                                         tag="meta")},
    }


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "SonoLabel labelling API", "version": "1.0",
                 "description": "Session cookie authentication (log in at /login). Every state-changing "
                                "request needs the CSRF token of the page's `csrf-token` meta tag in "
                                "the `X-CSRFToken` header."},
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "session",
                            "description": "The session cookie set by logging in at /login"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRFToken",
                         "description": "The CSRF token of the session (the page's `csrf-token` "
                                        "meta tag); required with the cookie on every change"}}},
    }
