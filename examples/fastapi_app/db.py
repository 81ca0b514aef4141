"""SQLite storage and the ``get_db`` yield dependency shared by routes and tasks."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator

logger = logging.getLogger("fastapi_app.db")

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    summary TEXT,
    language TEXT,
    request_id TEXT,
    author TEXT
)
"""


def database_path() -> str:
    return os.environ.get("NOTES_DB", "notes.db")


def create_schema() -> None:
    with sqlite3.connect(database_path()) as connection:
        connection.execute(SCHEMA)


def get_db() -> Iterator[sqlite3.Connection]:
    """One connection per request (or per task run): committed, then closed."""
    # FastAPI runs sync dependencies in a thread pool, so the connection may be used
    # from another thread than the one that opened it.
    connection = sqlite3.connect(database_path(), check_same_thread=False)
    connection.row_factory = sqlite3.Row
    logger.info("db session opened")
    try:
        yield connection
        connection.commit()
    finally:
        connection.close()
        logger.info("db session closed")
