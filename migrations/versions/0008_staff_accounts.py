"""staff accounts: each coordinator signs in to the dashboard with their own username and
password (hashed by werkzeug.security); a dashboard session records whose account it is

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 03:50:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('staff',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=32), nullable=False),
    sa.Column('display_name', sa.String(length=80), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff')),
    sa.UniqueConstraint('username', name=op.f('uq_staff_username'))
    )
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('staff_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_dashboard_sessions_staff_id'), ['staff_id'],
                              unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_dashboard_sessions_staff_id_staff'),
                                    'staff', ['staff_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_dashboard_sessions_staff_id_staff'),
                                 type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_dashboard_sessions_staff_id'))
        batch_op.drop_column('staff_id')
    op.drop_table('staff')
