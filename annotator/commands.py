"""Every ``sonolabel`` command group registered on the Flask CLI; ``users`` and ``demo`` live here."""
from __future__ import annotations

import secrets
import sys

import click
from flask import Flask
from flask.cli import with_appcontext

from .cli_support import CommandGroup, fail
from .dataset_cli import datasets_cli, export_cli, labels_cli
from .db import db
from .jobs_cli import register as register_jobs
from .models import Role, User
from .video_cli import videos_cli


def register_commands(app: Flask) -> None:
    """Put every group on ``app.cli``, made a :class:`CommandGroup` so refusals exit 2."""
    # Flask makes app.cli a plain AppGroup; Flask-Migrate has put its ``db`` group on it already.
    cli = CommandGroup(app.cli.name)
    cli.commands.update(app.cli.commands)
    app.cli = cli
    for command in (users_cli, videos_cli, demo_command, datasets_cli, export_cli, labels_cli):
        cli.add_command(command)
    register_jobs(app)  # worker, jobs, models


@click.group("users", help="Manage users and their roles.")
def users_cli() -> None:
    pass


@users_cli.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@with_appcontext
def create_user(name: str, role: str) -> None:
    """Create NAME; the password is read from stdin, or generated and printed once."""
    if db.session.scalar(db.select(User).filter_by(username=name)):
        fail(f"user {name!r} exists")
    if not 1 <= len(name) <= 64 or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        fail("user names are 1-64 letters, digits, '.', '-' or '_'")
    password = "" if sys.stdin.isatty() else sys.stdin.readline().strip()
    generated = not password
    if generated:
        password = secrets.token_urlsafe(12)
    user = User(username=name, role=Role(role))
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    click.echo(f"created {role} {name}" + (f" with password: {password}" if generated else ""))


DEMO_PATIENT = "DEMO-001"


@click.command("demo", help="Migrate, create an admin (password printed once) and import a demo sweep.")
@click.option("--frames", default=60, show_default=True, help="Frames of the synthetic sweep.")
@with_appcontext
def demo_command(frames: int) -> None:
    from flask_migrate import upgrade

    from detector.phantom import main as phantom_main

    from .models import Video
    from .services.frames import data_dir
    from .services.video_import import import_video

    upgrade()
    if db.session.scalar(db.select(User).filter_by(role=Role.admin)) is None:
        password = secrets.token_urlsafe(12)
        admin = User(username="admin", role=Role.admin)
        admin.set_password(password)
        db.session.add(admin)
        db.session.commit()
        click.echo(f"admin user: admin  password: {password}  (shown once; keep it)")
    if db.session.scalar(db.select(db.func.count(Video.id))) == 0:
        out = data_dir() / "demo"
        if not any(out.rglob("*.mp4")):
            click.echo("generating a synthetic liver sweep ...")
            phantom_main(["--out", str(out), "--videos", "1", "--frames", str(frames),
                          "--size", "512", "--seed", "7"])
        video_path = sorted(out.rglob("*.mp4"))[0]
        result = import_video(video_path, DEMO_PATIENT, scenes="auto", source_name=video_path.name)
        click.echo(f"imported demo video {result.video.id}: {result.frames} frames, {result.scenes} scenes")
    click.echo("open http://127.0.0.1:5000 and log in as admin")
