"""Experiment storage: SQL tables and the SQLAlchemy ``ExperimentStore`` adapter."""

from __future__ import annotations

from storage.schema import SCHEMA_VERSION
from storage.engine import sqlite_url
from storage.errors import SchemaVersionError, StoreError
from storage.sql_store import SqlExperimentStore

__all__ = ["SCHEMA_VERSION", "SchemaVersionError", "SqlExperimentStore", "StoreError", "sqlite_url"]
