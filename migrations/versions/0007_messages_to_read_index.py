"""a partial index on the patients' free-text messages passed on to the care team and not yet
read (status 'to_read'), for the dashboard's list of messages to read

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 02:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

WHERE = sa.text("status = 'to_read'")


def upgrade() -> None:
    op.create_index('ix_messages_to_read', 'messages', ['id'], unique=False,
                    sqlite_where=WHERE, postgresql_where=WHERE)


def downgrade() -> None:
    op.drop_index('ix_messages_to_read', table_name='messages')
