"""The job queue: Huey on SQLite in the data directory by default (nothing to install),
on Redis when ``SONOLABEL_REDIS_URL`` is set so workers on other machines share the queue."""
from __future__ import annotations

import os

from flask import Flask
from huey import Huey, RedisHuey, SqliteHuey


def make_huey(app: Flask, immediate: bool = False) -> Huey:
    url = app.config.get("SONOLABEL_REDIS_URL")
    if url:
        return RedisHuey("sonolabel", url=url, immediate=immediate)
    path = os.path.join(app.config["SONOLABEL_DATA_DIR"], "jobs.sqlite")
    return SqliteHuey("sonolabel", filename=path, immediate=immediate)
