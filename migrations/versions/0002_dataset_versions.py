"""Dataset versions: frozen, immutable selections of scenes with their split.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 16:12:51.939858

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('dataset_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('split_by', sa.String(length=16), nullable=False),
    sa.Column('ratios', sa.JSON(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('filters', sa.JSON(), nullable=False),
    sa.Column('last_event_id', sa.Integer(), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('image_count', sa.Integer(), nullable=False),
    sa.Column('box_count', sa.Integer(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_dataset_versions_created_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dataset_versions')),
    sa.UniqueConstraint('name', name=op.f('uq_dataset_versions_name'))
    )
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_versions_content_hash'), ['content_hash'], unique=False)

    op.create_table('dataset_scenes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('scene_id', sa.Integer(), nullable=False),
    sa.Column('video_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('split', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('frame_count', sa.Integer(), nullable=False),
    sa.Column('box_count', sa.Integer(), nullable=False),
    sa.Column('last_event_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['version_id'], ['dataset_versions.id'], name=op.f('fk_dataset_scenes_version_id_dataset_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dataset_scenes')),
    sa.UniqueConstraint('version_id', 'scene_id', name='version_scene')
    )
    with op.batch_alter_table('dataset_scenes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_scenes_scene_id'), ['scene_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dataset_scenes_version_id'), ['version_id'], unique=False)



def downgrade():
    with op.batch_alter_table('dataset_scenes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_scenes_version_id'))
        batch_op.drop_index(batch_op.f('ix_dataset_scenes_scene_id'))

    op.drop_table('dataset_scenes')
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_versions_content_hash'))

    op.drop_table('dataset_versions')
