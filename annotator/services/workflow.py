"""The scene workflow, and the transaction every label change runs in.

A scene moves new -> in_progress -> submitted -> reviewed | returned (:data:`TRANSITIONS`,
with the roles that may make each move). Its boxes can be edited while it is new, in progress
or returned (:data:`EDITABLE`); the first edit of a new or returned scene starts it
(:func:`start_editing`), giving it to the editor when nobody has it.

Who may change a scene's labels is decided here only (:func:`check_editable`, which
:func:`start_editing` calls, and its assignment half for the annotator's moves of
:func:`change_status`): nobody while it is submitted or reviewed (the review lock, 409), and
while it is assigned only its assignee, a data manager or an admin (403), as in CVAT, where a
job's assignee is the one who annotates it. Jobs started from the CLI (no user) pass the
assignment check, never the lock. An import
that would change a locked scene is refused unless an admin reopens it for that import with a
reason (:func:`unlock_for_import`): it goes back to ``returned`` with the reason as the review
comment, so the change is reviewed again, and the ``reopen`` event says who and why.

Design choices:
- Every label change (a box edit, an undo, a status move, an assignment) is one transaction
  that writes the change and its events (:mod:`.event_log`): :func:`atomic` rolls back on a
  refusal or a lost race, :func:`commit` commits and keeps what the answer needs.
- Optimistic locking: every box edit names the ``row_version`` the client last saw. A
  mismatch, or a concurrent commit caught by SQLAlchemy's ``version_id_col``
  (``StaleDataError``), is a :class:`Conflict` (HTTP 409), so a saved box is never
  overwritten by a stale client.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Callable, Iterable, Mapping

from sqlalchemy.orm.exc import StaleDataError

from ..db import db
from ..models import Box, Frame, LabelEvent, Patient, Role, Scene, SceneStatus, User, Video
from . import ServiceError, review_gate
from .event_log import is_mark_event, record_event
from .input_checks import id_list, shown

EDITABLE = {SceneStatus.new, SceneStatus.in_progress, SceneStatus.returned}
EDITOR_ROLES = {Role.admin, Role.annotator}
REVIEWER_ROLES = {Role.admin, Role.reviewer}

# (from, to) -> roles that may make the move.
TRANSITIONS: dict[tuple[SceneStatus, SceneStatus], set[Role]] = {
    (SceneStatus.new, SceneStatus.in_progress): EDITOR_ROLES,
    (SceneStatus.returned, SceneStatus.in_progress): EDITOR_ROLES,
    (SceneStatus.in_progress, SceneStatus.submitted): EDITOR_ROLES,
    (SceneStatus.returned, SceneStatus.submitted): EDITOR_ROLES,
    (SceneStatus.submitted, SceneStatus.reviewed): REVIEWER_ROLES,
    (SceneStatus.submitted, SceneStatus.returned): REVIEWER_ROLES,
    (SceneStatus.reviewed, SceneStatus.returned): REVIEWER_ROLES,
}
ASSIGNABLE = (Role.annotator, Role.admin)  # the roles that edit boxes
MANAGER_ROLES = {Role.admin, Role.data_manager}  # may change any scene, assigned or not
MAX_ASSIGN = 10_000
MAX_COMMENT = 5000
LISTED = 20  # scenes named in a message


class LabelRefused(ServiceError):
    """A refused label change; ``status`` is the HTTP code, ``str()`` the message for the user,
    ``detail`` extra JSON for the client (the saved box of a conflict)."""

    def __init__(self, message: str, status: int | None = None, **detail: Any):
        super().__init__(message, status)
        self.detail = detail


class Conflict(LabelRefused):
    status = 409


class ScenesLocked(Conflict):
    """An import that would change submitted or reviewed scenes; nothing was imported."""

    def __init__(self, scenes: list[Scene]):
        names = ", ".join(f"{s.id} ({s.status.value})" for s in scenes[:LISTED])
        if len(scenes) > LISTED:
            names += f" and {len(scenes) - LISTED} more"
        super().__init__(
            f"Scene{'s' if len(scenes) > 1 else ''} {names} {'are' if len(scenes) > 1 else 'is'} "
            "locked for review and this import would change "
            f"{'them' if len(scenes) > 1 else 'it'}; nothing was imported. An admin may reopen "
            "them for the import, giving a reason (sonolabel: --reopen --reason TEXT --as ADMIN); "
            "they go back to returned, to be reviewed again.",
            locked_scenes={str(s.id): s.status.value for s in scenes})


@dataclass
class Change:
    """The outcome of one change: the box as saved (None when removed), the events written,
    and the scene; ``box_data``/``scene_data`` are taken before the commit expires the objects,
    so answering needs no further queries."""

    box: Box | None
    events: list[LabelEvent]
    scene: Scene | None
    box_data: dict[str, Any] | None = None
    scene_data: dict[str, Any] | None = None
    event_ids: list[int] = field(default_factory=list)
    # The box and mark events of this change: what ``undo.revert_events`` takes to undo it.
    undo_ids: list[int] = field(default_factory=list)


def scene_summary(scene: Scene, names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """A scene as clients see it (pages add the patient code). ``names`` (user id -> name)
    saves a lookup per scene in lists; without it the assignee comes from the session, which
    costs no query when it is the user making the change, as it mostly is."""
    if scene.assignee_id is None:
        assignee = None
    elif names is not None:
        assignee = names.get(scene.assignee_id)
    else:
        user = db.session.get(User, scene.assignee_id)
        assignee = user.username if user else None
    return {"id": scene.id, "video_id": scene.video_id, "first_frame": scene.first_frame,
            "last_frame": scene.last_frame, "status": scene.status.value, "assignee": assignee,
            "review_comment": scene.review_comment or "",
            "updated_at": scene.updated_at.isoformat() if scene.updated_at else None}


def commit(change: Change) -> Change:
    db.session.flush()
    change.event_ids = [e.id for e in change.events]
    change.undo_ids = [e.id for e in change.events if e.box_id is not None or is_mark_event(e)]
    if change.box is not None:
        change.box_data = change.box.as_dict()
    if change.scene is not None:
        change.scene_data = scene_summary(change.scene)
    db.session.commit()
    return change


def atomic(fn: Callable[..., Any]) -> Callable[..., Any]:
    """All of a change or none of it: a refusal or a lost race rolls the session back."""

    @wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StaleDataError:
            db.session.rollback()
            raise Conflict("Someone else saved this box a moment ago; your change was not applied.")
        except Exception:
            db.session.rollback()
            raise

    return wrapped


def _locked(scene: Scene) -> Conflict:
    return Conflict(f"Scene {scene.id} is {scene.status.value.replace('_', ' ')}: "
                    "it cannot be edited until a reviewer returns it.")


def check_assignee(scene: Scene, user: User | None) -> None:
    """Refuse a change to a scene assigned to someone else, unless ``user`` manages scenes
    (or is None: a job started from the CLI)."""
    if user is None or user.role in MANAGER_ROLES or scene.assignee_id in (None, user.id):
        return
    name = db.session.scalar(db.select(User.username).where(User.id == scene.assignee_id))
    raise LabelRefused(f"Scene {scene.id} is assigned to {name}: only {name}, a data manager "
                       "or an admin may change it.", status=403)


def check_editable(scene: Scene, user: User | None) -> None:
    """The one rule for changing a scene's labels: not while it is locked for review, and
    only by its assignee when it has one (see the module's docstring)."""
    if scene.status not in EDITABLE:
        raise _locked(scene)
    check_assignee(scene, user)


def edit_refused(scene: Scene, user: User | None) -> str | None:
    """Why :func:`check_editable` refuses ``user`` the scene, or None (for jobs that skip
    such scenes)."""
    try:
        check_editable(scene, user)
    except LabelRefused as err:
        return err.message
    return None


def start_editing(frame: Frame, user: User | None) -> list[LabelEvent]:
    """Refuse edits that :func:`check_editable` refuses; the first edit of a new or returned
    scene starts it. A change without a user (a job started from the CLI) leaves the status
    alone."""
    scene = frame.scene
    if scene is None:
        return []
    check_editable(scene, user)
    if scene.status != SceneStatus.in_progress and user is not None:
        return [move_scene(scene, SceneStatus.in_progress, user, "")]
    return []


def move_scene(scene: Scene, to: SceneStatus, user: User, comment: str) -> LabelEvent:
    """Set the status (unchecked: :func:`change_status` checks), with its event."""
    before = {"status": scene.status.value}
    scene.status = to
    if to == SceneStatus.in_progress and scene.assignee_id is None:
        scene.assignee_id = user.id
    if to == SceneStatus.returned:
        scene.review_comment = comment
    return record_event(user, "status", "workflow", scene_id=scene.id, before=before,
                        after={"status": to.value, "comment": comment})


@atomic
def change_status(scene_id: int, payload: dict[str, Any], user: User) -> Change:
    """Move a scene along new -> in_progress -> submitted -> reviewed | returned. Submitting
    passes the review gate (:mod:`.review_gate`) unless an admin sends ``override``, a reason."""
    scene = db.session.get(Scene, scene_id)
    if scene is None:
        raise LabelRefused(f"Scene {scene_id} does not exist.", status=404)
    try:
        to = SceneStatus(payload.get("status"))
    except ValueError:
        raise LabelRefused(f"Unknown status {shown(payload.get('status'))} in 'status'; one of "
                           + ", ".join(s.value for s in SceneStatus) + ".")
    comment = payload.get("comment", "")
    if not isinstance(comment, str):
        raise LabelRefused("'comment' must be text.")
    comment = comment.strip()
    roles = TRANSITIONS.get((scene.status, to))
    if roles is None:
        raise Conflict(f"Scene {scene.id} is {scene.status.value}; it cannot move to {to.value}.")
    if user.role not in roles:
        raise LabelRefused(f"A {user.role.value.replace('_', ' ')} may not move a scene from "
                           f"{scene.status.value} to {to.value}.", status=403)
    if to in (SceneStatus.in_progress, SceneStatus.submitted):  # the annotator's moves
        check_assignee(scene, user)
    if to == SceneStatus.returned and not comment:
        raise LabelRefused("Say what to fix: returning a scene needs a comment.")
    if len(comment) > MAX_COMMENT:
        raise LabelRefused(f"The comment is too long ({MAX_COMMENT} characters at most).")
    events = _pass_review_gate(scene, to, payload.get("override"), user)
    events.append(move_scene(scene, to, user, comment))
    return commit(Change(None, events, scene))


def _pass_review_gate(scene: Scene, to: SceneStatus, override: Any, user: User) -> list[LabelEvent]:
    """Refuse a submission with undecided frames (:mod:`.review_gate`), unless an admin gives
    ``override``, a reason: then an ``override_gate`` event keeps the reason and the frames."""
    if override is not None and to != SceneStatus.submitted:
        raise LabelRefused("'override' applies only to submitting a scene.")
    if override is None:
        if to == SceneStatus.submitted:
            review_gate.check_submit(scene)
        return []
    reason = admin_reason(user, override, "submit a scene with unfinished frames",
                          "'override' must be the reason for submitting unfinished frames")
    todo = review_gate.unfinished(review_gate.scene_coverage(scene))
    if not todo:
        return []
    return [record_event(user, "override_gate", "workflow", scene_id=scene.id,
                         before={"status": scene.status.value,
                                 "unfinished_frames": [r["index"] for r in todo]},
                         after={"status": to.value, "reason": reason})]


@dataclass(frozen=True)
class Reopen:
    """An admin's leave for one import to change submitted or reviewed scenes, and why."""

    user: User
    reason: str


def admin_reason(user: User | None, reason: Any, may: str, needs: str) -> str:
    """The reason an admin gave for going past a safeguard: refused (403) to anyone else,
    "Say why: ``needs``" (400) when empty or not text."""
    if user is None or user.role != Role.admin:
        raise LabelRefused(f"Only an admin may {may}.", status=403)
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise LabelRefused(f"Say why: {needs}.")
    if len(reason) > MAX_COMMENT:
        raise LabelRefused(f"The reason is too long ({MAX_COMMENT} characters at most).")
    return reason


def reopen_leave(user: User | None, reason: str | None) -> Reopen:
    """Check that ``user`` may reopen locked scenes (admins only) and gave a reason."""
    return Reopen(user, admin_reason(user, reason, "reopen submitted or reviewed scenes",
                                     "reopening submitted or reviewed scenes needs a reason"))


def unlock_for_import(scenes: Iterable[Scene], leave: Reopen | None) -> list[Scene]:
    """Refuse an import that would change submitted or reviewed scenes, unless an admin gave
    ``leave``: then each goes back to returned, the reason its review comment, with a
    ``reopen`` event. Returns the reopened scenes (not committed)."""
    locked = sorted((s for s in scenes if s.status not in EDITABLE), key=lambda s: s.id)
    if locked and leave is None:
        raise ScenesLocked(locked)
    for scene in locked:
        record_event(leave.user, "reopen", "workflow", scene_id=scene.id,
                     before={"status": scene.status.value},
                     after={"status": SceneStatus.returned.value, "comment": leave.reason})
        scene.status, scene.review_comment = SceneStatus.returned, leave.reason
    return locked


def active_user(name: str) -> User:
    """The active user called ``name`` (for commands that say who acts, ``--as NAME``)."""
    user = db.session.scalar(db.select(User).where(User.username == name))
    if user is None or not user.active:
        raise LabelRefused(f"There is no active user {shown(name)}.")
    return user


def assignable_users() -> list[User]:
    """Active annotators, then admins, by name."""
    users = db.session.scalars(db.select(User).where(User.role.in_(ASSIGNABLE), User.active))
    return sorted(users, key=lambda u: (u.role != Role.annotator, u.username))


@atomic
def assign_scenes(scene_ids: list[int], assignee: str | None, user: User) -> list[Scene]:
    """Give scenes to an annotator (``assignee`` a user name) or to nobody (None); all or none.

    Each scene whose assignee changes gets an ``assign`` event. The scene's status is kept: a
    scene in progress goes on where its previous annotator left it.
    """
    ids = id_list(scene_ids, "scene_ids", limit=MAX_ASSIGN, what="scene ids")
    target: User | None = None
    if assignee is not None:
        if not isinstance(assignee, str):
            raise LabelRefused("'assignee' must be a user name, or null to unassign.")
        target = db.session.scalar(db.select(User).where(User.username == assignee))
        if target is None or not target.active:
            raise LabelRefused(f"There is no active user {shown(assignee)} ('assignee').")
        if target.role not in ASSIGNABLE:
            raise LabelRefused(f"{assignee} is a {target.role.value.replace('_', ' ')}: scenes go "
                               "to annotators (or admins), who draw the boxes.")
    scenes = {s.id: s for s in db.session.scalars(db.select(Scene).where(Scene.id.in_(set(ids))))}
    missing = sorted(set(ids) - set(scenes))
    if missing:
        raise LabelRefused(f"No scene {', '.join(map(str, missing[:20]))}.", status=404)
    names = dict(db.session.execute(db.select(User.id, User.username)).all())
    events = []
    for scene in (scenes[i] for i in sorted(scenes)):
        new_id = target.id if target is not None else None
        if scene.assignee_id == new_id:
            continue
        events.append(record_event(user, "assign", "workflow", scene_id=scene.id,
                                   before={"assignee": names.get(scene.assignee_id)},
                                   after={"assignee": target.username if target else None}))
        scene.assignee_id = new_id
    commit(Change(None, events, None))
    return [scenes[i] for i in sorted(scenes)]


def find_scenes(status: str = "", video_id: int | None = None, patient: str = "",
                assignee: str = "") -> list[Scene]:
    """Scenes filtered by status, video, patient code and assignee user name ("-" = nobody)."""
    query = db.select(Scene).join(Video, Video.id == Scene.video_id).join(Patient)
    if status:
        try:
            query = query.where(Scene.status == SceneStatus(status))
        except ValueError:
            raise LabelRefused(f"Unknown status {shown(status)} in 'status'; one of "
                               + ", ".join(s.value for s in SceneStatus) + ".")
    if video_id is not None:
        query = query.where(Scene.video_id == video_id)
    if patient:
        query = query.where(Patient.code == patient)
    if assignee == "-":
        query = query.where(Scene.assignee_id.is_(None))
    elif assignee:
        query = query.join(User, User.id == Scene.assignee_id).where(User.username == assignee)
    return list(db.session.scalars(query.order_by(Scene.updated_at.desc(), Scene.id.desc())))
