"""The label classes: adding, renaming, recolouring, re-keying and deleting them.

Design choices:
- Ids are stable: a rename keeps the id, and a new class gets one more than any id ever used,
  so a deleted class's id never comes back (frozen dataset versions and trained models name
  classes by id). The ids ever used are read from the table and from the class events.
- Every change is a label event with source ``classes`` (action ``class_add``,
  ``class_update`` or ``class_delete``, the class as it was and as it is), in the change's
  transaction; so the audit and the id history are the same append-only table.
- Names are unique without regard to case, because label imports match class names that way.
- A hotkey is a digit 1-9 (the workspace's keys), unique; omitted, the first free one.
- A class is in use, and cannot be deleted, while a box has it (pre-labels too) or a frozen
  dataset version has annotations of it (and so the models trained on that version).
"""
from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa

from ..db import db
from ..models import Box, DatasetVersion, LabelClass, LabelEvent, ModelVersion, User
from . import ServiceError
from .dataset_versions import version_dir
from .event_log import record_event
from .input_checks import shown

SOURCE = "classes"
NAME_RE = re.compile(r"[A-Za-z0-9_-](?:[A-Za-z0-9 _-]{0,62}[A-Za-z0-9_-])?")
COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")
HOTKEYS = range(1, 10)


class ClassRefused(ServiceError):
    """A class change that is refused (bad name, colour or hotkey, a clash, a class in use)."""


def add_hint(name: str) -> str:
    """How to add a missing class, for refusals that name one."""
    return (f"add it with: sonolabel classes add {shown(name)} --color '#rrggbb' "
            "(or on the Classes page)")


def ids_by_name() -> dict[str, int]:
    """Lower-case class name -> class id: how imports and pre-labels find a class."""
    return {name.lower(): cid for name, cid in db.session.execute(
        sa.select(LabelClass.name, LabelClass.id))}


def box_counts() -> dict[int, int]:
    return dict(db.session.execute(sa.select(Box.class_id, sa.func.count(Box.id))
                                   .group_by(Box.class_id)).all())


def list_classes() -> list[dict[str, Any]]:
    """Every class in hotkey order with the number of boxes that have it."""
    counts = box_counts()
    return [{**as_dict(c), "boxes": counts.get(c.id, 0)} for c in db.session.scalars(
        sa.select(LabelClass).order_by(LabelClass.hotkey))]


def as_dict(c: LabelClass) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "color": c.color, "hotkey": c.hotkey}


def get_class(ref: Any) -> LabelClass:
    """A class by id (an int) or by name (any case)."""
    found = None
    if isinstance(ref, int) and not isinstance(ref, bool):
        found = db.session.get(LabelClass, ref) if 0 < ref < 2**31 else None
    elif isinstance(ref, str):
        found = db.session.scalar(sa.select(LabelClass).where(
            sa.func.lower(LabelClass.name) == ref.strip().lower()))
    if found is None:
        raise ClassRefused(f"No class {shown(ref)}.", status=404)
    return found


def _name(value: Any, keep: LabelClass | None = None) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ClassRefused(f"A class name is 1-64 letters, digits, spaces, '-' or '_' (not starting "
                           f"or ending with a space), not {shown(value)}.")
    other = db.session.scalar(sa.select(LabelClass).where(
        sa.func.lower(LabelClass.name) == value.lower()))
    if other is not None and other is not keep:
        raise ClassRefused(f"A class named {other.name!r} exists (names are compared without case).",
                           status=409)
    return value


def _color(value: Any) -> str:
    if not isinstance(value, str) or not COLOR_RE.fullmatch(value.strip()):
        raise ClassRefused(f"A colour is '#rrggbb' (six hex digits), not {shown(value)}.")
    return value.strip().lower()


def _hotkey(value: Any, keep: LabelClass | None = None) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value not in HOTKEYS:
        raise ClassRefused(f"A hotkey is a digit from 1 to 9, not {shown(value)}.")
    other = db.session.scalar(sa.select(LabelClass).where(LabelClass.hotkey == value))
    if other is not None and other is not keep:
        raise ClassRefused(f"Hotkey {value} belongs to {other.name!r}; give that class another first.",
                           status=409)
    return value


def _free_hotkey() -> int:
    used = set(db.session.scalars(sa.select(LabelClass.hotkey)))
    free = [k for k in HOTKEYS if k not in used]
    if not free:
        raise ClassRefused("Every hotkey 1-9 is taken: there are at most nine classes.", status=409)
    return free[0]


def next_id() -> int:
    """One more than any class id ever used, in the table or in the class events."""
    ids = set(db.session.scalars(sa.select(LabelClass.id)))
    for before, after in db.session.execute(sa.select(LabelEvent.before, LabelEvent.after)
                                            .where(LabelEvent.source == SOURCE)):
        ids.update(snap["id"] for snap in (before, after) if isinstance(snap, dict) and "id" in snap)
    return max(ids, default=0) + 1


def _commit(what: str) -> None:
    try:
        db.session.commit()
    except sa.exc.IntegrityError:  # another change to the classes landed at the same moment
        db.session.rollback()
        raise ClassRefused(f"The classes changed while {what}; look again and retry.",
                           status=409) from None


def add_class(name: Any, color: Any, hotkey: Any = None, user: User | None = None) -> LabelClass:
    """A new class with the next id; ``hotkey`` None takes the first free digit."""
    label_class = LabelClass(id=next_id(), name=_name(name), color=_color(color),
                             hotkey=_free_hotkey() if hotkey in (None, "") else _hotkey(hotkey))
    db.session.add(label_class)
    record_event(user, "class_add", SOURCE, after=as_dict(label_class))
    _commit(f"adding {name!r}")
    return label_class


def update_class(ref: Any, name: Any = None, color: Any = None, hotkey: Any = None,
                 user: User | None = None) -> LabelClass:
    """Rename, recolour and/or re-key a class (what is None stays); its id stays."""
    label_class = get_class(ref)
    before = as_dict(label_class)
    if name not in (None, ""):
        label_class.name = _name(name, keep=label_class)
    if color not in (None, ""):
        label_class.color = _color(color)
    if hotkey not in (None, ""):
        label_class.hotkey = _hotkey(hotkey, keep=label_class)
    after = as_dict(label_class)
    if after == before:
        raise ClassRefused(f"Nothing to change: {label_class.name!r} already is that.")
    record_event(user, "class_update", SOURCE, before=before, after=after)
    _commit(f"changing {before['name']!r}")
    return label_class


def usage(label_class: LabelClass) -> list[str]:
    """What uses the class, as phrases for the refusal; empty when nothing does."""
    uses = []
    boxes = box_counts().get(label_class.id, 0)
    if boxes:
        uses.append(f"{boxes} box(es)")
    versions = versions_using(label_class.id)
    if versions:
        uses.append("dataset version(s) " + ", ".join(v.name for v in versions))
        models = db.session.scalars(sa.select(ModelVersion.name).where(
            ModelVersion.dataset_version_id.in_([v.id for v in versions])).order_by(ModelVersion.id)).all()
        if models:
            uses.append("model(s) " + ", ".join(models))
    return uses


def versions_using(class_id: int) -> list[DatasetVersion]:
    """Dataset versions whose frozen files have an annotation of the class."""
    out = []
    for version in db.session.scalars(sa.select(DatasetVersion).order_by(DatasetVersion.id)):
        for part in version.summary or {}:
            path = version_dir(version.id) / part / "annotations.json"
            if path.is_file() and any(a.get("category_id") == class_id for a in
                                      json.loads(path.read_bytes()).get("annotations", [])):
                out.append(version)
                break
    return out


def delete_class(ref: Any, user: User | None = None) -> str:
    """Delete a class nothing uses; returns its name."""
    label_class = get_class(ref)
    uses = usage(label_class)
    if uses:
        raise ClassRefused(f"A class in use cannot be deleted: {label_class.name!r} is used by "
                           f"{'; '.join(uses)}. Rename or recolour it instead.", status=409)
    record_event(user, "class_delete", SOURCE, before=as_dict(label_class))
    db.session.delete(label_class)
    _commit(f"deleting {label_class.name!r}")
    return label_class.name
