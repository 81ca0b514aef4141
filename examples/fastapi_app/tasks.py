"""The background work: the task declares ``get_db`` exactly like a route does."""

from __future__ import annotations

import logging
import sqlite3
from typing import Annotated

from fastapi import Depends, Request

from docket import Retry
from docket_starlette import current_request_id, task

from .db import get_db

logger = logging.getLogger("fastapi_app.tasks")

Db = Annotated[sqlite3.Connection, Depends(get_db)]


@task
async def summarize_note(
    note_id: int,
    db: Db,
    request: Request,
    retry: Retry = Retry(attempts=3),
) -> None:
    """Summarize a note, recording who asked, in which language, and the request id."""
    row = db.execute("SELECT text FROM notes WHERE id = ?", (note_id,)).fetchone()
    if row is None:
        logger.warning("note %s is gone", note_id)
        return
    summary = " ".join(row["text"].split()[:5]).upper()
    author = request.user.display_name if "user" in request.scope else None
    db.execute(
        "UPDATE notes SET summary = ?, language = ?, request_id = ?, author = ? WHERE id = ?",
        (
            summary,
            request.headers.get("accept-language"),
            current_request_id.get(),
            author,
            note_id,
        ),
    )
    logger.info("summarized note %s", note_id)


all_tasks = [summarize_note]
