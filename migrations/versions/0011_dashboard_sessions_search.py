"""dashboard_sessions.search: the patients page's search, kept server-side for the session
(it is a patient's name or number: never in a URL, nor in the cookie)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 17:45:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dashboard_sessions') as batch:
        batch.add_column(sa.Column('search', sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('dashboard_sessions') as batch:
        batch.drop_column('search')
