"""Who may use the operations web: users, roles, bearer tokens, and the audit log.

Passwords are kept as scrypt hashes with a per-user salt; tokens are 32 random
bytes handed out once and kept only as their SHA-256, so a copy of the
database lets nobody log in. Tokens expire after a fixed time (12 h, one long
shift, by default) and are dropped at log-out. Every mutating request is
written to ``audit_log`` with who made it and how it ended.

This module knows nothing of HTTP; ``core.web.auth`` puts it in front of the
routes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    delete,
    false,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.auth.throttle import LoginThrottle, Refusal
from core.errors import DomainError
from core.store import TEXT_MAX, Base

__all__ = [
    "AuditEntry",
    "AuthService",
    "BadCredentials",
    "TooManyLogIns",
    "Principal",
    "Role",
    "UserExists",
    "UserView",
]

USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
PASSWORD_MIN = 8
PASSWORD_MAX = 256
STATION_ID_MAX = 32  # as core.dispatch.officers; not imported, auth must not depend on dispatch
DEFAULT_TOKEN_TTL_S = 12 * 3600
# scrypt cost as OWASP recommends (Password Storage Cheat Sheet): 128 MiB and ~0.4 s per check on the
# lab machine, too slow to guess at scale. Stored hashes carry their own parameters; a weaker one is
# re-hashed at the next successful log-in.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
_SCRYPT_MAXMEM = 256 * 1024 * 1024
# Checks running at once: each takes 128 MiB, and a burst of log-ins must not take the machine's memory.
SCRYPT_SLOTS = 2


class Role(StrEnum):
    CALL_TAKER = "call_taker"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    OFFICER = "officer"  # username is the officer's badge
    STATION = "station"  # a police station's desk: its own incidents only
    GATEWAY = "gateway"  # a report channel's server (the 110 app's back end): posts text reports, nothing else


class BadCredentials(DomainError):
    """Unknown user, wrong password, or a disabled account; deliberately not told apart."""

    status = 401
    error_id = "bad-credentials"


class TooManyLogIns(DomainError):
    """Too many failed log-ins for this name from this address, or from this address: try again later."""

    status = 429
    error_id = "too-many-log-ins"

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"too many failed log-ins; try again in {refusal.retry_after_s} s",
                         details={"retry_after_s": refusal.retry_after_s})
        self.refusal = refusal


class WrongPassword(DomainError):
    """The current password given for a change is wrong (the log-in itself stays valid)."""

    status = 403
    error_id = "wrong-password"


class UserExists(DomainError):
    status = 409
    error_id = "user-exists"


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    station_id: Mapped[str | None] = mapped_column(String(STATION_ID_MAX))
    # "scrypt$n$r$p$salt_hex$hash_hex": the parameters travel with the hash.
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    # A password someone else set (a new user's, a reset): its holder must choose his own before anything else.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class TokenRow(Base):
    __tablename__ = "auth_tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    expires_at_us: Mapped[int] = mapped_column(BigInteger, index=True)


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at_us: Mapped[int] = mapped_column(BigInteger, index=True)
    who: Mapped[str] = mapped_column(String(64))  # username, or "-" when nobody was recognised
    role: Mapped[str | None] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(TEXT_MAX))
    status: Mapped[int] = mapped_column(Integer)
    body_sha256: Mapped[str | None] = mapped_column(String(64))


@dataclass(frozen=True, slots=True)
class Principal:
    """The user behind a request."""

    username: str
    role: Role
    station: str | None
    must_change_password: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"username": self.username, "role": str(self.role), "station": self.station,
                "must_change_password": self.must_change_password}


@dataclass(frozen=True, slots=True)
class UserView:
    username: str
    role: Role
    station: str | None
    disabled: bool
    created_at_us: int
    must_change_password: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"username": self.username, "role": str(self.role), "station": self.station,
                "disabled": self.disabled, "created_at_us": self.created_at_us,
                "must_change_password": self.must_change_password}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at_us: int
    who: str
    role: str | None
    method: str
    path: str
    status: int
    body_sha256: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at_us": self.at_us, "who": self.who, "role": self.role, "method": self.method,
                "path": self.path, "status": self.status, "body_sha256": self.body_sha256}


def hash_password(password: str, *, salt: bytes | None = None, n: int = SCRYPT_N) -> str:
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        computed = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                                  p=int(p), maxmem=_SCRYPT_MAXMEM, dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(computed.hex(), digest)


def weaker_than(stored: str, n: int) -> bool:
    """Whether ``stored`` was hashed with less than cost ``n`` (or other r, p): re-hash it at the next log-in."""
    try:
        kind, stored_n, r, p, _salt, _digest = stored.split("$")
        return kind != "scrypt" or int(stored_n) < n or (int(r), int(p)) != (SCRYPT_R, SCRYPT_P)
    except ValueError:
        return True


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_user_fields(username: Any, role: Any, station: Any) -> tuple[str, Role, str | None]:
    """The checked fields, or ValueError naming the bad one."""
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise ValueError("username must be 1-64 letters, digits or _.@-")
    try:
        checked_role = Role(role)
    except ValueError:
        raise ValueError(f"role must be one of {', '.join(Role)}") from None
    if checked_role is Role.STATION:
        if not isinstance(station, str) or not 1 <= len(station) <= STATION_ID_MAX:
            raise ValueError("a station user needs its station id")
    elif station is not None:
        raise ValueError("only station users belong to a station")
    return username, checked_role, station


class AuthService:
    """Users, log-in and tokens, and the audit log, in the ticket store."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        token_ttl_s: float = DEFAULT_TOKEN_TTL_S,
        clock: Callable[[], float] = time.time,
        scrypt_n: int = SCRYPT_N,
        throttle: LoginThrottle | None = None,
    ) -> None:
        if not token_ttl_s > 0:
            raise ValueError("token lifetime must be positive")
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self.token_ttl_s = token_ttl_s
        self._scrypt_n = scrypt_n
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self._scrypt_slots = asyncio.Semaphore(SCRYPT_SLOTS)
        # A wrong password costs the same scrypt as a right one, so the answer
        # time does not tell whether a username exists. Made at the first unknown
        # name, not here: building an application must not cost a hash.
        self._dummy_hash: str | None = None

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    # -- users -----------------------------------------------------------------

    async def add_user(self, username: str, password: str, role: Role | str, station: str | None = None, *,
                       must_change: bool = False) -> UserView:
        username, role, station = check_user_fields(username, role, station)
        hashed = await self._scrypt(hash_password, _checked_password(password), n=self._scrypt_n)
        async with self._sessions.begin() as session:
            if await session.scalar(select(UserRow.id).where(UserRow.username == username)) is not None:
                raise UserExists(f"user {username!r} exists")
            row = UserRow(username=username, role=role.value, station_id=station, password_hash=hashed,
                          disabled=False, created_at_us=self._now_us(), must_change_password=must_change)
            session.add(row)
        return _user_view(row)

    async def set_disabled(self, username: str, disabled: bool) -> UserView:
        async with self._sessions.begin() as session:
            row = await self._row(session, username)
            if disabled:
                await self._keep_an_admin(session, row)
            row.disabled = disabled
            if disabled:
                await session.execute(delete(TokenRow).where(TokenRow.user_id == row.id))
        return _user_view(row)

    async def set_password(self, username: str, password: str, *, must_change: bool = True) -> UserView:
        """An admin's reset: the user's log-ins end, and (by default) he must choose his own at the next."""
        hashed = await self._scrypt(hash_password, _checked_password(password), n=self._scrypt_n)
        async with self._sessions.begin() as session:
            row = await self._row(session, username)
            row.password_hash, row.must_change_password = hashed, must_change
            await session.execute(delete(TokenRow).where(TokenRow.user_id == row.id))
        return _user_view(row)

    async def change_own_password(self, username: str, current: str, new: str, *, token: str,
                                  address: str = "-") -> UserView:
        """The user's own change: ``current`` must be right (``WrongPassword``; wrong guesses count towards the
        log-in lock-out like failed log-ins), the new one differ from it; his other log-ins end, the one asking
        (``token``) goes on."""
        refusal = self.throttle.check(username, address)
        if refusal is not None:
            raise TooManyLogIns(refusal)
        if current == new:
            raise ValueError("the new password must differ from the current one")
        _checked_password(new)
        async with self._sessions() as session:
            stored = (await self._row(session, username)).password_hash
        if not await self._scrypt(verify_password, current, stored):
            self.throttle.failed(username, address)
            raise WrongPassword("the current password is wrong")
        self.throttle.succeeded(username, address)
        hashed = await self._scrypt(hash_password, new, n=self._scrypt_n)
        async with self._sessions.begin() as session:
            row = await self._row(session, username)
            if row.password_hash != stored:
                raise WrongPassword("the password was changed meanwhile: log in again")
            row.password_hash, row.must_change_password = hashed, False
            await session.execute(delete(TokenRow).where(TokenRow.user_id == row.id,
                                                         TokenRow.token_sha256 != _token_key(token)))
        return _user_view(row)

    async def set_role(self, username: str, role: Role | str, station: str | None = None) -> UserView:
        """A new role (and station, which a station user needs); the user's log-ins end: a token carries no
        role, but a page opened for the old one should not go on."""
        username, role, station = check_user_fields(username, role, station)
        async with self._sessions.begin() as session:
            row = await self._row(session, username)
            if role is not Role.ADMIN:
                await self._keep_an_admin(session, row)
            row.role, row.station_id = role.value, station
            await session.execute(delete(TokenRow).where(TokenRow.user_id == row.id))
        return _user_view(row)

    @staticmethod
    async def _keep_an_admin(session: Any, row: UserRow) -> None:
        """ValueError if ``row`` is the last enabled admin: nobody could manage users any more."""
        if row.role != Role.ADMIN or row.disabled:
            return
        others = await session.scalar(select(func.count()).select_from(UserRow).where(
            UserRow.role == Role.ADMIN, UserRow.disabled.is_(False), UserRow.id != row.id))
        if not others:
            raise ValueError(f"{row.username} is the last enabled admin: make another admin first")

    @staticmethod
    async def _row(session: Any, username: str) -> UserRow:
        row = await session.scalar(select(UserRow).where(UserRow.username == username))
        if row is None:
            raise LookupError(f"no user {username!r}")
        return row

    async def users(self) -> list[UserView]:
        async with self._sessions() as session:
            return [_user_view(r) for r in await session.scalars(select(UserRow).order_by(UserRow.username))]

    async def has_admin(self) -> bool:
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(UserRow).where(UserRow.role == Role.ADMIN, UserRow.disabled.is_(False))
            )
            return bool(count)

    # -- tokens ----------------------------------------------------------------

    async def login(self, username: str, password: str, *, address: str = "-") -> tuple[str, int, Principal]:
        """A new token, its expiry (epoch µs) and the user; ``BadCredentials`` otherwise.

        ``address`` is the client's; while the name from there, or the address, is locked out after too
        many failures, ``TooManyLogIns`` is raised before any password is checked.
        """
        refusal = self.throttle.check(username, address)
        if refusal is not None:
            raise TooManyLogIns(refusal)
        async with self._sessions() as session:
            row = await session.scalar(select(UserRow).where(UserRow.username == username))
        if row is None and self._dummy_hash is None:
            self._dummy_hash = await self._scrypt(hash_password, secrets.token_hex(8), n=self._scrypt_n)
        stored = row.password_hash if row is not None else self._dummy_hash or ""
        ok = await self._scrypt(verify_password, password, stored)
        if row is None or row.disabled or not ok:
            self.throttle.failed(username, address)
            raise BadCredentials("unknown user or wrong password")
        self.throttle.succeeded(username, address)
        rehashed = None
        if weaker_than(stored, self._scrypt_n):
            rehashed = await self._scrypt(hash_password, password, n=self._scrypt_n)
        token = secrets.token_urlsafe(32)
        now_us = self._now_us()
        expires_us = now_us + round(self.token_ttl_s * 1_000_000)
        async with self._sessions.begin() as session:
            if rehashed is not None:
                # Only if the hash is still the one checked: a password changed meanwhile wins.
                await session.execute(update(UserRow).where(UserRow.id == row.id, UserRow.password_hash == stored)
                                      .values(password_hash=rehashed))
            # Expired tokens are swept at each log-in; nothing else needs a timer.
            await session.execute(delete(TokenRow).where(TokenRow.expires_at_us <= now_us))
            session.add(TokenRow(token_sha256=_token_key(token), user_id=row.id, created_at_us=now_us,
                                 expires_at_us=expires_us))
        return token, expires_us, Principal(row.username, Role(row.role), row.station_id,
                                            bool(row.must_change_password))

    async def _scrypt(self, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # scrypt is CPU-bound for a good part of a second: off the event loop, a bounded number at once.
        async with self._scrypt_slots:
            return await asyncio.to_thread(work, *args, **kwargs)

    async def resolve(self, token: str) -> Principal | None:
        """The user a live token belongs to, or None (unknown, expired, or the user disabled)."""
        if not token or len(token) > 512:
            return None
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(UserRow.username, UserRow.role, UserRow.station_id, UserRow.disabled,
                           UserRow.must_change_password, TokenRow.expires_at_us)
                    .join(TokenRow, TokenRow.user_id == UserRow.id)
                    .where(TokenRow.token_sha256 == _token_key(token))
                )
            ).one_or_none()
        if found is None or found.disabled or found.expires_at_us <= self._now_us():
            return None
        return Principal(found.username, Role(found.role), found.station_id, bool(found.must_change_password))

    async def logout(self, token: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(delete(TokenRow).where(TokenRow.token_sha256 == _token_key(token)))

    # -- audit -----------------------------------------------------------------

    async def audit(
        self, *, who: str, role: str | None, method: str, path: str, status: int, body_sha256: str | None
    ) -> None:
        async with self._sessions.begin() as session:
            session.add(AuditRow(at_us=self._now_us(), who=who[:64], role=role, method=method[:8],
                                 path=path[:TEXT_MAX], status=status, body_sha256=body_sha256))

    async def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        async with self._sessions() as session:
            rows = await session.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(limit))
            return [AuditEntry(r.id, r.at_us, r.who, r.role, r.method, r.path, r.status, r.body_sha256)
                    for r in rows]


def _user_view(row: UserRow) -> UserView:
    return UserView(row.username, Role(row.role), row.station_id, bool(row.disabled), row.created_at_us,
                    bool(row.must_change_password))


def _checked_password(password: Any) -> str:
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValueError(f"password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters")
    return password
