"""The revisions, oldest first by their number; alembic reads them by path and skips this file."""
