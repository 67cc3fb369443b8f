"""status callbacks remember the outbox row (and route) their URL names, so that a send whose
answer was lost (a read timeout after Twilio took the message) is not sent again once Twilio
reports it

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 01:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('status_events') as batch:
        batch.add_column(sa.Column('outbox_ref', sa.String(length=32), nullable=True))
        batch.create_index('ix_status_events_outbox_ref', ['outbox_ref'])


def downgrade() -> None:
    with op.batch_alter_table('status_events') as batch:
        batch.drop_index('ix_status_events_outbox_ref')
        batch.drop_column('outbox_ref')
