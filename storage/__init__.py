"""Experiment storage: SQL tables and the SQLAlchemy ``ExperimentStore`` adapter."""

from __future__ import annotations

from storage.schema import SCHEMA_VERSION
from storage.sql_store import SchemaVersionError, SqlExperimentStore, StoreError, sqlite_url

__all__ = ["SCHEMA_VERSION", "SchemaVersionError", "SqlExperimentStore", "StoreError", "sqlite_url"]
