"""a partial index on the patients' messages the bot could not handle (status 'unprocessed'),
so that /healthz finds the unread ones without scanning every message

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:45:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

WHERE = sa.text("status = 'unprocessed'")


def upgrade() -> None:
    op.create_index('ix_messages_unprocessed', 'messages', ['id'], unique=False,
                    sqlite_where=WHERE, postgresql_where=WHERE)


def downgrade() -> None:
    op.drop_index('ix_messages_unprocessed', table_name='messages')
