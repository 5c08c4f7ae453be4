"""Test-only helpers (never shipped in the packages)."""
