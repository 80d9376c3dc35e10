"""The database's schema history (Alembic), run by `hub.store.engine.migrate` at every start.

There is no alembic.ini: `hub.store.engine.alembic_config()` builds the configuration in
code, so the revisions ship inside the package and a hub upgrades its own
database wherever it is installed.

A change to `hub/store/models.py` needs a new revision in `versions/` (the next number,
`down_revision` the current head), written out with `op.*` calls so it works on
SQLite (batch mode, set in env.py) and PostgreSQL alike. To let Alembic draft it
from the models, against a scratch database brought to the current head first:

    .venv/bin/python -c "from alembic import command; \
from hub.store.engine import alembic_config, make_engine; url = 'sqlite:////tmp/head.db'; \
make_engine(url).dispose(); c = alembic_config(); c.set_main_option('sqlalchemy.url', url); \
command.revision(c, 'what changed', autogenerate=True, rev_id='0003')"

then read the draft and write out what it should do (it names sqlmodel's
AutoString where sa.String is meant).

tests/test_migrations.py then checks the models and the revisions still agree.
"""
