"""The Alembic chain goes up and down on SQLite and PostgreSQL and matches the models."""
from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from annotator import create_app
from annotator.db import db


def test_upgrade_downgrade_round_trip(database_url, tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "SONOLABEL_DATA_DIR": str(tmp_path / "d")})
    with app.app_context():
        upgrade()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"users", "patients", "videos", "scenes", "frames", "label_classes", "boxes",
                "label_events"} <= tables
        classes = db.session.execute(sa.text("SELECT id, name, color FROM label_classes ORDER BY id")).all()
        assert [tuple(c) for c in classes] == [(1, "tumor", "#5ec8f2"), (2, "vessel", "#e53935")]
        db.session.remove()
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    db.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        if db.engine.dialect.name == "sqlite":  # ids of deleted boxes are not handed out again
            assert "AUTOINCREMENT" in db.session.scalar(sa.text(
                "SELECT sql FROM sqlite_master WHERE name = 'boxes'"))

        downgrade(revision="base")
        left = set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}
        assert left == set()
        upgrade()  # and back up again: a downgrade must leave a database the chain can rebuild
        assert "boxes" in sa.inspect(db.engine).get_table_names()
        db.session.remove()
        db.engine.dispose()
