"""Every table of the center, for whoever creates or migrates the whole schema.

The store knows no capability; each capability's tables register on ``core.store.Base``
when their module is imported. This module imports them all, so that ``Base.metadata``
is the whole schema: the migrations compare it with the database (``jiejing db revision``,
and a test that the revisions build exactly this schema).
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from core import leases as _leases  # noqa: F401
from core import store
from core.alerts import board as _alerts  # noqa: F401
from core.auth import users as _users  # noqa: F401
from core.calls import tables as _calls  # noqa: F401
from core.dispatch import officers as _officers  # noqa: F401
from core.dispatch import places as _places  # noqa: F401
from core.dispatch import planner as _planner  # noqa: F401
from core.quality import tables as _quality  # noqa: F401
from core.seats import board as _seats  # noqa: F401
from core.seats import posture as _posture  # noqa: F401
from core.situation import history as _situation  # noqa: F401
from core.triage import aml_service as _aml  # noqa: F401
from core.triage import classify as _classify  # noqa: F401
from core.triage import keywords as _keywords  # noqa: F401
from core.triage import major as _major  # noqa: F401
from core.triage import push as _push  # noqa: F401
from core.triage import queries as _queries  # noqa: F401
from core.triage import repeat as _repeat  # noqa: F401

metadata: MetaData = store.Base.metadata


async def init_schema(engine: AsyncEngine) -> None:
    """Bring the database to this release's schema by the migrations (``core.migrate.upgrade``).

    An empty database gets every table (tests and benchmarks make theirs so, the same way a fresh
    install does); a current one is left as it is.
    """
    from core import migrate

    await migrate.upgrade(engine)
