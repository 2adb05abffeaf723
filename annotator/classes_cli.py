"""``sonolabel classes ...``: the label classes (names, colours, hotkeys); changes are audited as
label events with source ``classes``, made by no user (the command line)."""
from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from .models import LabelClass
from .services import classes


@click.group("classes", help="List, add, rename, recolour and delete label classes.")
def classes_cli() -> None:
    pass


def _described(c: LabelClass) -> str:
    return f"class {c.name!r}: id {c.id}, hotkey {c.hotkey}, {c.color}"


@classes_cli.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON array: id, name, color, hotkey and the boxes using each class.")
@with_appcontext
def list_cmd(as_json: bool) -> None:
    """Every class in hotkey order."""
    rows = classes.list_classes()
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(" id key colour   name (boxes)")
    for c in rows:
        click.echo(f"{c['id']:>3}  {c['hotkey']}  {c['color']}  {c['name']} ({c['boxes']})")


@classes_cli.command("add")
@click.argument("name")
@click.option("--color", "--colour", "color", required=True, help="'#rrggbb'")
@click.option("--hotkey", help="a digit 1-9 (default: the first free one)")
@with_appcontext
def add_cmd(name: str, color: str, hotkey: str | None) -> None:
    """Add class NAME (1-64 letters, digits, spaces, '-', '_'); its id is never reused."""
    added = classes.add_class(name, color, hotkey)
    click.echo(f"added {_described(added)}")


@classes_cli.command("rename")
@click.argument("old")
@click.argument("new")
@click.option("--color", "--colour", "color", help="a new colour too, '#rrggbb'")
@click.option("--hotkey", help="a new hotkey too, a digit 1-9")
@with_appcontext
def rename_cmd(old: str, new: str, color: str | None, hotkey: str | None) -> None:
    """Rename class OLD to NEW; its id, and so every box of it, stays."""
    changed = classes.update_class(old, name=new, color=color, hotkey=hotkey)
    click.echo(f"now {_described(changed)}")


@classes_cli.command("recolor")
@click.argument("name")
@click.argument("color")
@click.option("--hotkey", help="a new hotkey too, a digit 1-9")
@with_appcontext
def recolor_cmd(name: str, color: str, hotkey: str | None) -> None:
    """Give class NAME the colour COLOR ('#rrggbb')."""
    changed = classes.update_class(name, color=color, hotkey=hotkey)
    click.echo(f"now {_described(changed)}")


@classes_cli.command("hotkey")
@click.argument("name")
@click.argument("digit")
@with_appcontext
def hotkey_cmd(name: str, digit: str) -> None:
    """Give class NAME the hotkey DIGIT (1-9, not another class's)."""
    changed = classes.update_class(name, hotkey=digit)
    click.echo(f"now {_described(changed)}")


@classes_cli.command("delete")
@click.argument("name")
@with_appcontext
def delete_cmd(name: str) -> None:
    """Delete class NAME; refused while a box or a dataset version uses it."""
    click.echo(f"deleted class {classes.delete_class(name)!r}")
