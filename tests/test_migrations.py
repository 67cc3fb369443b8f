"""The Alembic migrations build exactly the schema the models describe."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bot.store.db import make_engine
from bot.store.migrate import upgrade
from bot.store.models import Base


def _diff(url):
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def test_migrations_match_the_models_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    upgrade(url)
    assert _diff(url) == []


def test_migrations_match_the_models_on_postgresql(pg_engine):
    # pg_engine ran the real migrations on the PostgreSQL test schema.
    assert _diff(pg_engine.url.render_as_string(hide_password=False)) == []
