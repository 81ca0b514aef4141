"""Run it: ``uvicorn examples.fastapi_app.main:app`` (from the repository root) or,
from ``examples/``, ``uvicorn fastapi_app.main:app``.

By default the docket lives in memory and an embedded worker runs the tasks. With Redis
and a separate worker::

    export DOCKET_URL=redis://localhost:6379/0 DOCKET_EMBEDDED=0
    uvicorn fastapi_app.main:app &
    docket worker --app fastapi_app.main:app
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

from docket_starlette import (
    RequestCapture,
    RequestContextMiddleware,
    WorkerOptions,
    docket_lifespan,
)
from docket_starlette.fastapi import DocketDep

from .db import create_schema, get_db
from .tasks import all_tasks, summarize_note

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    create_schema()
    yield {"app_name": "notes"}


embedded = os.environ.get("DOCKET_EMBEDDED", "1") == "1"

app = FastAPI(
    lifespan=docket_lifespan(
        url=os.environ.get("DOCKET_URL", "memory://notes"),
        name=os.environ.get("DOCKET_NAME", "notes"),
        tasks=all_tasks,
        worker=WorkerOptions(concurrency=4) if embedded else None,
        capture=RequestCapture(headers=["accept-language"]),
        lifespan=lifespan,
    )
)
app.add_middleware(RequestContextMiddleware)

Db = Annotated[sqlite3.Connection, Depends(get_db)]


class NoteIn(BaseModel):
    text: str


@app.post("/notes", status_code=202)
async def create_note(note: NoteIn, db: Db, docket: DocketDep) -> dict[str, Any]:
    cursor = db.execute("INSERT INTO notes (text) VALUES (?)", (note.text,))
    db.commit()
    note_id = cursor.lastrowid
    execution = await docket.add(summarize_note)(note_id)
    return {"id": note_id, "task": execution.key}


@app.get("/notes/{note_id}")
async def read_note(note_id: int, db: Db) -> dict[str, Any]:
    row = db.execute("SELECT * FROM notes WHERE id = ?", (note_id,)).fetchone()
    if row is None:
        raise HTTPException(404)
    return dict(row)
