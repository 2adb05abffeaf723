"""``sonolabel users create``: passwords from stdin or generated once; refusals exit 2."""
from __future__ import annotations

import re

from annotator.db import db
from annotator.models import Role, User


def test_create_user_with_password_from_stdin(app):
    result = app.test_cli_runner().invoke(args=["users", "create", "dr_kim", "--role", "annotator"],
                                          input="s3cret-pass\n")
    assert result.exit_code == 0, result.output
    assert "password" not in result.output
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(username="dr_kim"))
        assert user.role is Role.annotator and user.check_password("s3cret-pass")


def test_create_user_generates_and_prints_password_once(app):
    result = app.test_cli_runner().invoke(args=["users", "create", "rev1", "--role", "reviewer"], input="")
    assert result.exit_code == 0, result.output
    password = re.search(r"password: (\S+)", result.output).group(1)
    with app.app_context():
        assert db.session.scalar(db.select(User).filter_by(username="rev1")).check_password(password)


def test_refusals_exit_2_with_one_line(app):
    runner = app.test_cli_runner()
    dup = runner.invoke(args=["users", "create", "admin", "--role", "admin"], input="x\n")
    assert dup.exit_code == 2 and "exists" in dup.output
    bad_role = runner.invoke(args=["users", "create", "x", "--role", "surgeon"], input="x\n")
    assert bad_role.exit_code == 2
    bad_name = runner.invoke(args=["users", "create", "../etc", "--role", "annotator"], input="x\n")
    assert bad_name.exit_code == 2 and bad_name.output.count("\n") == 1
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == len(Role)
