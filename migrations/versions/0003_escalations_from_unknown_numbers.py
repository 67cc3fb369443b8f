"""escalations from numbers that are not enrolled: no patient, the sender's phone instead;
delivery statuses up to 24 characters (Twilio's "partially_delivered" is 19)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 08:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phone', sa.String(length=32), nullable=True))
        batch_op.alter_column('patient_id', existing_type=sa.Integer(), nullable=True)
        batch_op.create_index('ix_escalations_phone', ['phone'], unique=False)
    for table in ('messages', 'status_events'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('status', existing_type=sa.String(length=12),
                                  type_=sa.String(length=24), existing_nullable=False)


def downgrade() -> None:
    for table in ('messages', 'status_events'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('status', existing_type=sa.String(length=24),
                                  type_=sa.String(length=12), existing_nullable=False)
    # Escalations without a patient cannot be kept by the older schema.
    op.execute("DELETE FROM escalations WHERE patient_id IS NULL AND NOT EXISTS "
               "(SELECT 1 FROM messages WHERE messages.escalation_id = escalations.id)")
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.drop_index('ix_escalations_phone')
        batch_op.alter_column('patient_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('phone')
