"""Alembic environment. The toolkit runs migrations itself (`open_store`), handing over a connection."""

from alembic import context
from sqlalchemy import create_engine

from toolkit.catalog import eval_models, review_models  # noqa: F401  (autogenerate sees every table)
from toolkit.catalog.models import Base

target_metadata = Base.metadata
config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:  # plain `alembic` CLI use, e.g. `alembic -c toolkit/store/alembic.ini revision --autogenerate`
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
