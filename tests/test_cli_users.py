"""``sonolabel users create`` / ``set-password`` / ``deactivate`` / ``activate``: passwords from
stdin or generated once, held to one rule (length, not common, not the user name); refusals exit 2
with one line."""
from __future__ import annotations

import re

import pytest
from helpers import PASSWORD

from annotator.db import db
from annotator.models import Role, User
from annotator.services import accounts


def test_create_user_with_password_from_stdin(app):
    result = app.test_cli_runner().invoke(args=["users", "create", "dr_kim", "--role", "annotator"],
                                          input="liver lesion marker\n")
    assert result.exit_code == 0, result.output
    assert "password" not in result.output
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(username="dr_kim"))
        assert user.role is Role.annotator and accounts.authenticate("dr_kim", "liver lesion marker") == user


def test_create_user_generates_and_prints_password_once(app):
    result = app.test_cli_runner().invoke(args=["users", "create", "rev1", "--role", "reviewer"], input="")
    assert result.exit_code == 0, result.output
    password = re.search(r"password: (\S+)", result.output).group(1)
    assert accounts.password_problem(password, "rev1") is None
    with app.app_context():
        assert accounts.authenticate("rev1", password) is not None


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


@pytest.mark.parametrize("password, why", [
    ("a", "at least 12 characters"),
    ("short pass1", "at least 12 characters"),
    ("password1234", "too common"),
    ("Correct Horse Battery Staple", "too common"),
    ("aaaaaaaaaaaaaaaa", "too simple"),
    ("my name is newbie!", "user name"),
])
def test_weak_passwords_are_refused_by_create_and_set_password(app, password, why):
    runner = app.test_cli_runner()
    create = runner.invoke(args=["users", "create", "newbie", "--role", "annotator"], input=password + "\n")
    assert create.exit_code == 2 and why in create.output and create.output.count("\n") == 1
    reset = runner.invoke(args=["users", "set-password", "annotator"],
                          input=password.replace("newbie", "annotator") + "\n")
    assert reset.exit_code == 2 and why in reset.output and reset.output.count("\n") == 1
    with app.app_context():
        assert db.session.scalar(db.select(User).filter_by(username="newbie")) is None
        annotator = db.session.scalar(db.select(User).filter_by(username="annotator"))
        assert accounts.authenticate("annotator", PASSWORD) == annotator and annotator.session_version == 0


def test_set_password_from_stdin_or_generated(app):
    runner = app.test_cli_runner()
    given = runner.invoke(args=["users", "set-password", "reviewer"], input="a longer pass phrase\n")
    assert given.exit_code == 0 and given.output == "new password for reviewer set\n"
    generated = runner.invoke(args=["users", "set-password", "annotator"], input="")
    assert generated.exit_code == 0, generated.output
    password = re.search(r"new password for annotator: (\S+)", generated.output).group(1)
    assert accounts.password_problem(password, "annotator") is None
    with app.app_context():
        reviewer = db.session.scalar(db.select(User).filter_by(username="reviewer"))
        assert accounts.authenticate("reviewer", "a longer pass phrase") == reviewer
        assert accounts.authenticate("reviewer", PASSWORD) is None
        assert accounts.authenticate("annotator", password) is not None


def test_unknown_users_are_refused(app):
    runner = app.test_cli_runner()
    for command in ("set-password", "deactivate", "activate"):
        result = runner.invoke(args=["users", command, "ghost"], input="a longer pass phrase\n")
        assert result.exit_code == 2 and result.output == "error: no user 'ghost'\n", command
