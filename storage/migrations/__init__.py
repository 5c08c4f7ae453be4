"""Alembic migrations of the experiment database (shipped as package data; run by ``SqlExperimentStore``)."""
