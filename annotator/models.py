"""Every table of SonoLabel. Schema changes go through an Alembic migration in ``migrations/``."""
from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from flask_login import UserMixin
from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, Enum, Float, ForeignKey, Integer,
                        String, Text, UniqueConstraint, event)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .db import db
from .services.frames import frame_relpath


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Role(str, enum.Enum):
    admin = "admin"
    data_manager = "data_manager"
    annotator = "annotator"
    reviewer = "reviewer"


class SceneStatus(str, enum.Enum):
    new = "new"
    in_progress = "in_progress"
    submitted = "submitted"
    reviewed = "reviewed"
    returned = "returned"


class BoxSource(str, enum.Enum):
    manual = "manual"
    model = "model"
    propagated = "propagated"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings with a CHECK, so adding a member is a simple migration everywhere.
    return Enum(cls, name=name, native_enum=False, create_constraint=True, length=20,
                values_callable=lambda e: [m.value for m in e])


class User(UserMixin, db.Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    def get_id(self) -> str:  # what the session holds: bumping the version ends older sessions
        return f"{self.id}:{self.session_version}"

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return self.active


class Patient(db.Model):
    """A pseudonymous patient: a code chosen by the data manager, never a name."""

    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    videos: Mapped[list[Video]] = relationship(back_populates="patient")


class Video(db.Model):
    __tablename__ = "videos"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    source_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    source_name: Mapped[str] = mapped_column(String(255))
    container: Mapped[str] = mapped_column(String(16))
    codec: Mapped[str] = mapped_column(String(32))
    fps: Mapped[float] = mapped_column(Float)
    frame_count: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    roi_x: Mapped[int] = mapped_column(Integer)
    roi_y: Mapped[int] = mapped_column(Integer)
    roi_w: Mapped[int] = mapped_column(Integer)
    roi_h: Mapped[int] = mapped_column(Integer)
    deidentified: Mapped[bool] = mapped_column(Boolean, default=False)
    deid_method: Mapped[str] = mapped_column(String(255), default="")
    # Frames the decoder refused as damaged: [{"timestamp_ms", "before_frame"}] (video_import).
    skipped_frames: Mapped[list] = mapped_column(JSON, default=list)
    imported_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="videos")
    scenes: Mapped[list[Scene]] = relationship(
        back_populates="video", order_by="Scene.first_frame", cascade="all, delete-orphan"
    )
    frames: Mapped[list[Frame]] = relationship(
        back_populates="video", order_by="Frame.frame_index", cascade="all, delete-orphan"
    )

    @property
    def roi(self) -> list[int]:
        return [self.roi_x, self.roi_y, self.roi_w, self.roi_h]


class Scene(db.Model):
    """A run of consecutive frames ``first_frame..last_frame`` (inclusive, decoder indices)."""

    __tablename__ = "scenes"
    __table_args__ = (CheckConstraint("first_frame <= last_frame", name="frame_order"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    first_frame: Mapped[int] = mapped_column(Integer)
    last_frame: Mapped[int] = mapped_column(Integer)
    status: Mapped[SceneStatus] = mapped_column(_enum(SceneStatus, "scene_status"),
                                                default=SceneStatus.new, index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    review_comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 onupdate=utcnow)

    video: Mapped[Video] = relationship(back_populates="scenes")
    frames: Mapped[list[Frame]] = relationship(back_populates="scene", order_by="Frame.frame_index")
    assignee: Mapped[User | None] = relationship()

    @property
    def frame_count(self) -> int:
        return self.last_frame - self.first_frame + 1


class Frame(db.Model):
    """One decoded, ROI-cropped, de-identified frame stored as a PNG addressed by its hash."""

    __tablename__ = "frames"
    __table_args__ = (UniqueConstraint("video_id", "frame_index", name="video_frame"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    scene_id: Mapped[int | None] = mapped_column(
        ForeignKey("scenes.id", ondelete="SET NULL"), nullable=True, index=True
    )
    frame_index: Mapped[int] = mapped_column(Integer)
    timestamp_ms: Mapped[float] = mapped_column(Float)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    reviewed_empty: Mapped[bool] = mapped_column(Boolean, default=False)

    video: Mapped[Video] = relationship(back_populates="frames")
    scene: Mapped[Scene | None] = relationship(back_populates="frames")
    boxes: Mapped[list[Box]] = relationship(back_populates="frame", cascade="all, delete-orphan",
                                            order_by="Box.id")

    @property
    def relpath(self) -> str:
        return frame_relpath(self.sha256)


class LabelClass(db.Model):
    __tablename__ = "label_classes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    color: Mapped[str] = mapped_column(String(7))  # "#rrggbb"
    hotkey: Mapped[int] = mapped_column(Integer, unique=True)


class Box(db.Model):
    """A box in pixels of the stored (cropped) frame: top-left ``x, y`` and size ``w, h``."""

    __tablename__ = "boxes"
    # Exports and the audit log name boxes by id: SQLite must not hand a deleted id out again.
    __table_args__ = (CheckConstraint("w > 0 AND h > 0", name="positive_size"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"), index=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("label_classes.id"))
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    w: Mapped[float] = mapped_column(Float)
    h: Mapped[float] = mapped_column(Float)
    source: Mapped[BoxSource] = mapped_column(_enum(BoxSource, "box_source"), default=BoxSource.manual)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    track_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    row_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 onupdate=utcnow)

    frame: Mapped[Frame] = relationship(back_populates="boxes")
    label_class: Mapped[LabelClass] = relationship()
    author: Mapped[User | None] = relationship()

    # SQLAlchemy adds "AND row_version = :old" to every UPDATE and raises StaleDataError on 0 rows.
    __mapper_args__ = {"version_id_col": row_version}

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "frame_id": self.frame_id, "class_id": self.class_id,
            "x": self.x, "y": self.y, "w": self.w, "h": self.h,
            "source": self.source.value, "score": self.score,
            "model_version": self.model_version, "track_id": self.track_id,
            "author_id": self.author_id, "row_version": self.row_version,
        }


class LabelEvent(db.Model):
    """Append-only audit of every label change; rows are never updated or deleted."""

    __tablename__ = "label_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    # Plain integers, not foreign keys: the audit outlives the boxes and frames it describes.
    scene_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    frame_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    box_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(20))
    before: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSON, nullable=True)

    user: Mapped[User | None] = relationship()


@event.listens_for(LabelEvent, "before_update")
@event.listens_for(LabelEvent, "before_delete")
def _refuse_audit_change(mapper: Any, connection: Any, target: LabelEvent) -> None:
    raise RuntimeError("label_events is append-only")


DEFAULT_CLASSES = [
    # Colours of the reference detector's figures: tumour light blue, vessel red.
    {"id": 1, "name": "tumor", "color": "#5ec8f2", "hotkey": 1},
    {"id": 2, "name": "vessel", "color": "#e53935", "hotkey": 2},
]


class DatasetVersion(db.Model):
    """A frozen, immutable dataset: which scenes, up to which label event, split how, and the
    hash of the COCO files stored under ``<data dir>/datasets/<id>/``. Rows are never updated."""

    __tablename__ = "dataset_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    split_by: Mapped[str] = mapped_column(String(16))  # "patient" or "video"
    ratios: Mapped[list] = mapped_column(JSON)  # [train, val, test]
    seed: Mapped[int] = mapped_column(Integer)
    filters: Mapped[dict] = mapped_column(JSON)  # statuses, video ids, patient codes, class names
    # The newest label event when the version was frozen; later events are not in it.
    last_event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    image_count: Mapped[int] = mapped_column(Integer)
    box_count: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict] = mapped_column(JSON)  # per split: images, boxes, patients, videos

    created_by: Mapped[User | None] = relationship()
    scenes: Mapped[list[DatasetScene]] = relationship(
        back_populates="version", order_by="DatasetScene.scene_id", cascade="all, delete-orphan"
    )


class DatasetScene(db.Model):
    """One scene frozen into a version, with its split and the newest label event it contains."""

    __tablename__ = "dataset_scenes"
    __table_args__ = (UniqueConstraint("version_id", "scene_id", name="version_scene"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"),
                                            index=True)
    # Plain integers, not foreign keys: a frozen version outlives the rows it describes.
    scene_id: Mapped[int] = mapped_column(Integer, index=True)
    video_id: Mapped[int] = mapped_column(Integer)
    patient_id: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(8))  # "train", "val" or "test"
    status: Mapped[str] = mapped_column(String(20))  # the scene's status when frozen
    frame_count: Mapped[int] = mapped_column(Integer)
    box_count: Mapped[int] = mapped_column(Integer)
    last_event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    version: Mapped[DatasetVersion] = relationship(back_populates="scenes")


@event.listens_for(DatasetVersion, "before_update")
@event.listens_for(DatasetScene, "before_update")
def _refuse_frozen_change(mapper: Any, connection: Any, target: Any) -> None:
    raise RuntimeError("dataset versions are immutable")


# --- jobs and model versions -------------------------------------------------------------------

class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Job(db.Model):
    """One background job (retrain, evaluate, prelabel, propagate), mirrored from the queue.

    ``worker`` is ``host:pid`` of the consumer running it and ``heartbeat_at`` its last sign
    of life: a worker starting later marks a running job whose worker is gone as failed."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    params: Mapped[dict] = mapped_column(JSON)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"),
                                              default=JobStatus.queued, index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    queue_id: Mapped[str] = mapped_column(String(64), default="")  # the Huey task id
    worker: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    created_by: Mapped[User | None] = relationship()


class ModelVersion(db.Model):
    """A trained detector registered by a successful retrain job; its files lie under
    ``<data dir>/models/<id>/`` and ``file_sha256`` is the hash of its ``model.pt``."""

    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # what boxes' model_version holds
    kind: Mapped[str] = mapped_column(String(16))  # "single" or "two_frame"
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    # A plain integer, as in dataset_scenes: the model outlives the rows it was trained from.
    dataset_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    config: Mapped[dict] = mapped_column(JSON)
    metrics: Mapped[dict] = mapped_column(JSON)
    file_sha256: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    parent: Mapped[ModelVersion | None] = relationship(remote_side="ModelVersion.id")
    created_by: Mapped[User | None] = relationship()


class EvaluationReport(db.Model):
    """The detector's evaluation report of a model version on one split of a dataset version."""

    __tablename__ = "evaluation_reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    dataset_version_id: Mapped[int] = mapped_column(Integer, index=True)
    split: Mapped[str] = mapped_column(String(8))
    summary: Mapped[dict] = mapped_column(JSON)  # AP, AP50, AP75, threshold, FP tracks/min
    report: Mapped[dict] = mapped_column(JSON)  # detector.evaluate.evaluate_detections output
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model_version: Mapped[ModelVersion] = relationship()


class SceneRanking(db.Model):
    """How much a model's boxes disagree with flow-propagated ones in a scene (higher: label
    it sooner); one row per scene and model version, replaced when recomputed."""

    __tablename__ = "scene_rankings"
    __table_args__ = (UniqueConstraint("scene_id", "model_version", name="scene_model"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scene_id: Mapped[int] = mapped_column(ForeignKey("scenes.id", ondelete="CASCADE"), index=True)
    model_version: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float, index=True)
    details: Mapped[dict] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
