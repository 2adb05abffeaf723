"""Every ``sonolabel`` command group registered on the Flask CLI; ``users`` and ``demo`` live here."""
from __future__ import annotations

import sys

import click
from flask import Flask
from flask.cli import with_appcontext

from .check_cli import check_command
from .classes_cli import classes_cli
from .cli_support import CommandGroup
from .dataset_cli import datasets_cli, export_cli, labels_cli
from .db import db
from .jobs_cli import register as register_jobs
from .models import Role, User
from .services import accounts
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
    cli.add_command(check_command)
    cli.add_command(classes_cli)


@click.group("users", help="Manage users and their roles.")
def users_cli() -> None:
    pass


@users_cli.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@with_appcontext
def create_user(name: str, role: str) -> None:
    """Create NAME; the password is read from stdin, or generated and printed once."""
    _, generated = accounts.create_user(name, Role(role), _password_from_stdin())
    click.echo(f"created {role} {name}" + (f" with password: {generated}" if generated else ""))


@users_cli.command("set-password")
@click.argument("name")
@with_appcontext
def set_password(name: str) -> None:
    """Give NAME a new password (from stdin, or generated and printed once); logs NAME out."""
    generated = accounts.set_password(name, _password_from_stdin())
    click.echo(f"new password for {name}" + (f": {generated}" if generated else " set"))


def _activation_command(verb: str, active: bool, help_text: str) -> click.Command:
    @click.command(verb, help=help_text)
    @click.argument("name")
    @with_appcontext
    def command(name: str) -> None:
        accounts.set_active(name, active)
        click.echo(f"{verb}d {name}")

    return command


users_cli.add_command(_activation_command(
    "deactivate", False, "NAME may no longer log in; their sessions end now. Their labels stay."))
users_cli.add_command(_activation_command("activate", True, "NAME may log in again."))


def _password_from_stdin() -> str | None:
    """The first line piped in, or None (at a terminal, or an empty line): generate one."""
    return None if sys.stdin.isatty() else sys.stdin.readline().strip() or None


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
        _, password = accounts.create_user("admin", Role.admin, None)
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
