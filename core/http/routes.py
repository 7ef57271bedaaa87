"""Routes declared where their handlers are: path, method, roles, body schema, query, scope.

Each capability's views module holds one ``RouteTable`` and decorates its
handlers with it (the way wazo-calld's resources carry their ACL)::

    routes = RouteTable("dispatch")

    @routes.put("/api/tickets/{number}/location", DESK, "Set or correct the incident location", body=LOCATION_BODY)
    async def put_location(request): ...

The capability's set-up adds the table to the application (``add_to``), which
also records each ``RouteSpec`` in ``app[ROUTE_SPECS]``: the authentication
middleware enforces roles, scopes and body schemas from there, and the
OpenAPI document is built from the same specs, so what is documented is what
is enforced. Nothing here imports a capability or the application factory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.auth.users import Role

if TYPE_CHECKING:
    from core.auth.users import Principal

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Extra checks for the station and officer roles: None to let the request on, a response to refuse it.
Scope = Callable[[web.Request, "Principal"], Awaitable[web.StreamResponse | None]]

ALL = frozenset(Role)
DESK = frozenset({Role.CALL_TAKER, Role.SUPERVISOR, Role.ADMIN})
SUPERVISORS = frozenset({Role.SUPERVISOR, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})
PUBLIC: frozenset[Role] = frozenset()


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str  # aiohttp's canonical form, e.g. /api/tickets/{number}
    roles: frozenset[Role]  # empty: public
    summary: str
    tag: str
    body: dict[str, Any] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    scope: Scope | None = field(default=None, compare=False)
    websocket: bool = False
    content: str = "application/json"  # what a successful answer is

    @property
    def public(self) -> bool:
        return not self.roles

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


ROUTE_SPECS = web.AppKey("route_specs", dict[tuple[str, str], RouteSpec])


class RouteTable:
    """The routes of one capability, each declared on its handler."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._routes: list[tuple[RouteSpec, Handler]] = []

    def route(self, method: str, path: str, roles: frozenset[Role], summary: str, *, tag: str | None = None,
              body: dict[str, Any] | None = None, query: dict[str, dict[str, Any]] | None = None,
              scope: Scope | None = None, websocket: bool = False,
              content: str = "application/json") -> Callable[[Handler], Handler]:
        spec = RouteSpec(method, path, frozenset(roles), summary, tag or self.tag, body, dict(query or {}), scope,
                         websocket, content)
        if any(s.key == spec.key for s, _ in self._routes):
            raise ValueError(f"route {method} {path} declared twice")

        def declare(handler: Handler) -> Handler:
            self._routes.append((spec, handler))
            return handler

        return declare

    def get(self, path: str, roles: frozenset[Role], summary: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, roles, summary, **kw)

    def post(self, path: str, roles: frozenset[Role], summary: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, roles, summary, **kw)

    def put(self, path: str, roles: frozenset[Role], summary: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, roles, summary, **kw)

    def delete(self, path: str, roles: frozenset[Role], summary: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, roles, summary, **kw)

    def __iter__(self) -> Iterator[RouteSpec]:
        return (spec for spec, _ in self._routes)

    def add_to(self, app: web.Application) -> None:
        """Register every route on ``app`` and record its spec for the middleware and the spec document."""
        specs = app.get(ROUTE_SPECS)
        if specs is None:
            specs = app[ROUTE_SPECS] = {}
        for spec, handler in self._routes:
            if spec.key in specs:
                raise ValueError(f"route {spec.method} {spec.path} added twice")
            specs[spec.key] = spec
            app.router.add_route(spec.method, spec.path, handler)


def declared(*tables: RouteTable) -> dict[tuple[str, str], RouteSpec]:
    """``{(method, path): spec}`` of the given tables; a route declared in two of them is an error."""
    out: dict[tuple[str, str], RouteSpec] = {}
    for table in tables:
        for spec in table:
            if spec.key in out:
                raise ValueError(f"route {spec.method} {spec.path} declared twice")
            out[spec.key] = spec
    return out


def registered(app: web.Application) -> Iterator[tuple[str, str]]:
    """``(method, path)`` of every route on ``app``; HEAD twins of GET routes left out."""
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        yield route.method, route.resource.canonical


def unlisted(app: web.Application) -> list[tuple[str, str]]:
    """Routes on ``app`` that were added without a declaration (refused to all but admins)."""
    specs = app.get(ROUTE_SPECS, {})
    return sorted(key for key in registered(app) if key not in specs)
