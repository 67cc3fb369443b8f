"""staff API tokens: each staff account may hold its own bearer tokens for the JSON API (only
their SHA-256 is stored), so API actions are audited as the account

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 04:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('staff_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=60), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'],
                            name=op.f('fk_staff_tokens_staff_id_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_staff_tokens_token_hash'))
    )
    with op.batch_alter_table('staff_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_tokens_staff_id'), ['staff_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('staff_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_tokens_staff_id'))
    op.drop_table('staff_tokens')
