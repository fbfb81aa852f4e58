"""Opening the catalog: engine set-up, migrations to head, sessions, and the audit log."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from toolkit.catalog import eval_models, review_models  # noqa: F401  (register their tables on Base)
from toolkit.catalog.models import AuditEvent
from toolkit.core.config import current_actor, redact_text, redact_url
from toolkit.core.errors import InputError
from toolkit.core.locks import exclusive_file_lock

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class StoreError(InputError):
    """The catalog cannot be opened or used; the message says what to fix."""


class CatalogDamagedError(StoreError):
    """The catalog's SQLite file is damaged (overwritten pages, not a database): restore it from a backup."""


# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT ("database disk image is malformed") and
# SQLITE_NOTADB ("file is not a database"). Only these read as damage; any other database error stays a bug.
_SQLITE_DAMAGE_CODES = frozenset({11, 26})


def sqlite_damage(err: BaseException) -> str | None:
    """SQLite's own words when `err` (a DBAPI error, or SQLAlchemy's wrapper of one) says the file is
    damaged; None for every other error."""
    original = getattr(err, "orig", None) or err
    code = getattr(original, "sqlite_errorcode", None)
    if isinstance(original, sqlite3.DatabaseError) and isinstance(code, int) and code & 0xFF in _SQLITE_DAMAGE_CODES:
        return str(original)
    return None


def damaged_catalog_error(url: str, reason: str) -> CatalogDamagedError:
    path = make_url(url).database
    return CatalogDamagedError(f"the catalog {redact_url(url)} is damaged ({reason}); restore it from a backup "
                               f"(`sqlite3 {path} 'PRAGMA integrity_check'` lists what is broken)")


def _raise_if_damaged(url: str) -> Any:
    """A `handle_error` listener: every statement on the engine, migrations included, reports a damaged
    file as CatalogDamagedError, so no command has to catch it."""
    def listener(context: ExceptionContext) -> None:
        reason = sqlite_damage(context.original_exception)
        if reason is not None:
            raise damaged_catalog_error(url, reason) from context.original_exception
    return listener


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL keeps readers going during an ingest; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@dataclass
class Store:
    """An open catalog. Use `session()` for a unit of work that commits or rolls back whole."""

    url: str
    engine: Engine
    _factory: sessionmaker[Session]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def audit(self, action: str, subject: str, details: dict[str, Any], actor: str | None = None) -> None:
        """Append one event to the audit log in its own transaction."""
        with self.session() as session:
            session.add(AuditEvent(actor=actor or current_actor(), action=action, subject=subject,
                                   details=details))

    def close(self) -> None:
        self.engine.dispose()


_MIGRATION_LOCK_KEY = 0x746F6F6C6B6974  # "toolkit": one advisory lock id for catalog migrations


def _sqlite_file(parsed: Any) -> Path | None:
    """The file of a SQLite URL; None for another backend or an in-memory database."""
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


@contextmanager
def _migration_lock(parsed: Any) -> Iterator[None]:
    """For a SQLite file: an exclusive lock on `<db>.migrate-lock` while the schema is checked and migrated,
    so ten commands started together on a new workspace do not all try to CREATE TABLE. PostgreSQL uses
    an advisory lock instead (in `open_store`); an in-memory SQLite database needs none."""
    database = _sqlite_file(parsed)
    if database is None:
        yield
        return
    with exclusive_file_lock(database.with_name(database.name + ".migrate-lock")):
        yield


def open_store(url: str, migrate: bool = True) -> Store:
    """Connect to the catalog at `url` and bring its schema to the newest migration."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:  # ValueError: a port that is not a number
        raise StoreError(f"not a database URL: {redact_url(url)!r} (expected e.g. sqlite:///path/catalog.db "
                         "or postgresql+psycopg://user:pass@host/db)") from err
    database = _sqlite_file(parsed)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Default to psycopg 3, the driver the `postgres` extra installs.
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        engine = create_engine(parsed, pool_pre_ping=True)
    except ModuleNotFoundError as err:
        raise StoreError(f"the driver for {parsed.drivername} is not installed ({err.name}); "
                         "for PostgreSQL run: pip install 'clic-toolkit[postgres]'") from err
    except ArgumentError as err:  # NoSuchModuleError: a scheme SQLAlchemy has no dialect for
        raise StoreError(f"unsupported database URL {redact_url(url)!r} ({redact_text(str(err), url)}); "
                         "use sqlite:///path/catalog.db or postgresql+psycopg://user:pass@host/db") from err
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "handle_error", _raise_if_damaged(url))
    if migrate:
        try:
            with _migration_lock(parsed), engine.begin() as connection:
                if engine.dialect.name == "postgresql":
                    # Held to the end of this transaction: concurrent first uses migrate one after another,
                    # and the later ones find the schema at head.
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
                cfg = _alembic_config(url)
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
        except CatalogDamagedError:
            engine.dispose()
            raise
        except Exception as err:
            engine.dispose()
            if (reason := sqlite_damage(err)) is not None:  # raised while connecting, before any statement
                raise damaged_catalog_error(url, reason) from err
            raise StoreError(f"cannot open the catalog at {redact_url(url)}: {redact_text(str(err), url)}") from err
    return Store(url=url, engine=engine, _factory=sessionmaker(engine, expire_on_commit=False))


def recreate_database(server_url: str, label: str) -> str:
    """Drop and create a PostgreSQL database named after `label` on the server of `server_url`;
    returns its URL. For tests and benchmarks that need a clean catalog on a real server."""

    from sqlalchemy import text

    url = make_url(server_url)
    name = "t_" + re.sub(r"[^a-z0-9_]", "_", label.lower())[-50:]
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)
