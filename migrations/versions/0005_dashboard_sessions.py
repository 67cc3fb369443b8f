"""dashboard sessions: signing out ends a session at once, and a session lasts a fixed time
from sign-in (the cookie only carries a random id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 11:17:36.184816
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dashboard_sessions',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_dashboard_sessions'))
    )


def downgrade() -> None:
    op.drop_table('dashboard_sessions')
