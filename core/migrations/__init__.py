"""Alembic's migration scripts of the center's schema: ``env.py``, the template and ``versions/``.

They live inside the package so that they ship with it; ``core.migrate`` configures alembic
to find them here (no ``alembic.ini``) and runs them. One revision per schema change, each
written out with alembic operations, so that a revision never changes when the models do.
"""
