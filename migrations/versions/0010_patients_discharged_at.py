"""patients.discharged_at: when a patient's check-ins were ended (discharge), kept also while
they are opted out, so that START returns them to discharged and not to active

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 04:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('patients') as batch:
        batch.add_column(sa.Column('discharged_at', sa.DateTime(timezone=True), nullable=True))
    # Patients discharged before this column existed.
    op.execute("UPDATE patients SET discharged_at = CURRENT_TIMESTAMP "
               "WHERE status = 'discharged'")


def downgrade() -> None:
    with op.batch_alter_table('patients') as batch:
        batch.drop_column('discharged_at')
