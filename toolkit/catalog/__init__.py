"""The SQL catalog: typed tables, migrations, and the session helpers every stage uses."""

from toolkit.catalog.db import Store, open_store

__all__ = ["Store", "open_store"]
