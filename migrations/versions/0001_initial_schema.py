"""Initial schema: users, patients, videos, scenes, frames, label classes, boxes, audit.

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 15:51:59.887609

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('label_classes',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('color', sa.String(length=7), nullable=False),
    sa.Column('hotkey', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_classes')),
    sa.UniqueConstraint('hotkey', name=op.f('uq_label_classes_hotkey')),
    sa.UniqueConstraint('name', name=op.f('uq_label_classes_name'))
    )
    # Frozen copy of the defaults: tumour light blue, vessel red (ids match the detector's labels).
    classes = sa.table('label_classes', sa.column('id', sa.Integer), sa.column('name', sa.String),
                       sa.column('color', sa.String), sa.column('hotkey', sa.Integer))
    op.bulk_insert(classes, [
        {'id': 1, 'name': 'tumor', 'color': '#5ec8f2', 'hotkey': 1},
        {'id': 2, 'name': 'vessel', 'color': '#e53935', 'hotkey': 2},
    ], multiinsert=False)
    op.create_table('patients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patients')),
    sa.UniqueConstraint('code', name=op.f('uq_patients_code'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('role', sa.Enum('admin', 'data_manager', 'annotator', 'reviewer', name='role', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('label_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('scene_id', sa.Integer(), nullable=True),
    sa.Column('frame_id', sa.Integer(), nullable=True),
    sa.Column('box_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('after', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_label_events_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_events'))
    )
    with op.batch_alter_table('label_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_label_events_box_id'), ['box_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_label_events_frame_id'), ['frame_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_label_events_scene_id'), ['scene_id'], unique=False)

    op.create_table('videos',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('source_sha256', sa.String(length=64), nullable=False),
    sa.Column('source_name', sa.String(length=255), nullable=False),
    sa.Column('container', sa.String(length=16), nullable=False),
    sa.Column('codec', sa.String(length=32), nullable=False),
    sa.Column('fps', sa.Float(), nullable=False),
    sa.Column('frame_count', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('roi_x', sa.Integer(), nullable=False),
    sa.Column('roi_y', sa.Integer(), nullable=False),
    sa.Column('roi_w', sa.Integer(), nullable=False),
    sa.Column('roi_h', sa.Integer(), nullable=False),
    sa.Column('deidentified', sa.Boolean(), nullable=False),
    sa.Column('deid_method', sa.String(length=255), nullable=False),
    sa.Column('imported_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['imported_by_id'], ['users.id'], name=op.f('fk_videos_imported_by_id_users')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_videos_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_videos')),
    sa.UniqueConstraint('source_sha256', name=op.f('uq_videos_source_sha256'))
    )
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_videos_patient_id'), ['patient_id'], unique=False)

    op.create_table('scenes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('video_id', sa.Integer(), nullable=False),
    sa.Column('first_frame', sa.Integer(), nullable=False),
    sa.Column('last_frame', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('new', 'in_progress', 'submitted', 'reviewed', 'returned', name='scene_status', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('assignee_id', sa.Integer(), nullable=True),
    sa.Column('review_comment', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('first_frame <= last_frame', name=op.f('ck_scenes_frame_order')),
    sa.ForeignKeyConstraint(['assignee_id'], ['users.id'], name=op.f('fk_scenes_assignee_id_users')),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_scenes_video_id_videos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scenes'))
    )
    with op.batch_alter_table('scenes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scenes_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_scenes_video_id'), ['video_id'], unique=False)

    op.create_table('frames',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('video_id', sa.Integer(), nullable=False),
    sa.Column('scene_id', sa.Integer(), nullable=True),
    sa.Column('frame_index', sa.Integer(), nullable=False),
    sa.Column('timestamp_ms', sa.Float(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('reviewed_empty', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['scene_id'], ['scenes.id'], name=op.f('fk_frames_scene_id_scenes'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_frames_video_id_videos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_frames')),
    sa.UniqueConstraint('video_id', 'frame_index', name='video_frame')
    )
    with op.batch_alter_table('frames', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_frames_scene_id'), ['scene_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_frames_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_frames_video_id'), ['video_id'], unique=False)

    op.create_table('boxes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('frame_id', sa.Integer(), nullable=False),
    sa.Column('class_id', sa.Integer(), nullable=False),
    sa.Column('x', sa.Float(), nullable=False),
    sa.Column('y', sa.Float(), nullable=False),
    sa.Column('w', sa.Float(), nullable=False),
    sa.Column('h', sa.Float(), nullable=False),
    sa.Column('source', sa.Enum('manual', 'model', 'propagated', name='box_source', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('model_version', sa.String(length=64), nullable=True),
    sa.Column('track_id', sa.Integer(), nullable=True),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('row_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('w > 0 AND h > 0', name=op.f('ck_boxes_positive_size')),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_boxes_author_id_users')),
    sa.ForeignKeyConstraint(['class_id'], ['label_classes.id'], name=op.f('fk_boxes_class_id_label_classes')),
    sa.ForeignKeyConstraint(['frame_id'], ['frames.id'], name=op.f('fk_boxes_frame_id_frames'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_boxes'))
    )
    with op.batch_alter_table('boxes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_boxes_frame_id'), ['frame_id'], unique=False)



def downgrade():
    with op.batch_alter_table('boxes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_boxes_frame_id'))

    op.drop_table('boxes')
    with op.batch_alter_table('frames', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_frames_video_id'))
        batch_op.drop_index(batch_op.f('ix_frames_sha256'))
        batch_op.drop_index(batch_op.f('ix_frames_scene_id'))

    op.drop_table('frames')
    with op.batch_alter_table('scenes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scenes_video_id'))
        batch_op.drop_index(batch_op.f('ix_scenes_status'))

    op.drop_table('scenes')
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_videos_patient_id'))

    op.drop_table('videos')
    with op.batch_alter_table('label_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_events_scene_id'))
        batch_op.drop_index(batch_op.f('ix_label_events_frame_id'))
        batch_op.drop_index(batch_op.f('ix_label_events_box_id'))
        batch_op.drop_index(batch_op.f('ix_label_events_at'))

    op.drop_table('label_events')
    op.drop_table('users')
    op.drop_table('patients')
    op.drop_table('label_classes')
