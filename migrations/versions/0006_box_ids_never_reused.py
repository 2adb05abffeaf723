"""Box ids are never reused on SQLite.

Label Studio exports and the audit log name boxes by id; SQLite without AUTOINCREMENT gives
the largest deleted id to the next new box, so an older export or an old event would name
a different box. PostgreSQL sequences never reuse ids: nothing to do there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 12:00:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def _recreate_boxes(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    with op.batch_alter_table('boxes', recreate='always',
                              table_kwargs={'sqlite_autoincrement': autoincrement}):
        pass


def upgrade():
    _recreate_boxes(True)


def downgrade():
    _recreate_boxes(False)
