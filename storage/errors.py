"""The store's one-line errors: :class:`StoreError`, :class:`SchemaVersionError`, and :func:`store_error`
turning any database failure into a message that says what happened and what to do."""

from __future__ import annotations

import functools
import sqlite3

from sqlalchemy.exc import SQLAlchemyError

from storage.schema import SCHEMA_VERSION


class StoreError(ValueError):
    """The experiment database cannot be used; a one-line message names it and says what to do."""


class SchemaVersionError(StoreError):
    """The database was written by a schema this code cannot upgrade (newer, or unknown)."""

    def __init__(self, where: str, found: int | str | None, expected: int | str = SCHEMA_VERSION, *, newer: bool = False) -> None:
        self.where, self.found, self.expected = where, found, expected
        if newer:
            kind = "version" if isinstance(found, int) else "revision"
            text = (f"experiment database {where} has schema {kind} {found}, newer than this LocDiff (expected {kind} "
                    f"{expected} or older); upgrade LocDiff, or pass another --store")
        else:
            found_text = "no schema version" if found is None else f"schema version {found}"
            text = (f"experiment database {where} has {found_text}, expected version {expected}; "
                    "it was not written by LocDiff's migrations: pass another --store")
        super().__init__(text)


_HINTS = (
    ("readonly", "the file or its folder is read-only: make it writable, or pass another --store"),
    ("unable to open", "check that the folder exists and is writable, or pass another --store"),
    ("not a database", "the file is not an SQLite database: move it away, or pass another --store"),
    ("malformed", "the file is damaged: restore a backup, or pass another --store"),
    ("disk is full", "free some disk space and retry (nothing was written)"),
    ("disk i/o", "the disk reported an I/O error (nothing was written); check it and retry"),
    ("locked", "another process holds the database lock for too long; retry when it is done"),
    ("no such column", "its tables differ from its recorded schema version: restore a backup, or pass another --store"),
    ("no such table", "its tables differ from its recorded schema version: restore a backup, or pass another --store"),
)

# What a database failure can raise below SQLAlchemy: turned into a StoreError at the store's surface.
DATABASE_FAILURES = (SQLAlchemyError, sqlite3.Error, OSError)


def store_error(where: str, exc: BaseException) -> StoreError:
    """One line for any failure of the database: what happened and what to do."""
    if isinstance(exc, StoreError):
        return exc
    raw = getattr(exc, "orig", None) or exc
    text = " ".join(str(raw).split()) or type(raw).__name__
    hint = next((h for key, h in _HINTS if key in text.lower()), "check the database, or pass another --store")
    return StoreError(f"experiment database {where}: {text[:200]}; {hint}")


def guarded(method):
    """Turn database failures of a public method into a one-line :class:`StoreError` (the transaction is rolled back).

    The method's object names its database in ``self.where``."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DATABASE_FAILURES as exc:
            raise store_error(self.where, exc) from None

    return wrapper
