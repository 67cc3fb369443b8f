"""Claiming due work so that two scheduler processes never do the same item twice."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

T = TypeVar("T")


def claim_due(session: Session, model: type[T], *where: Any, order_by: Any,
              limit: int) -> list[T]:
    """Due rows locked for this transaction; rows another process has locked are skipped.

    PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED. SQLite has no row locks; there every
    transaction takes the database write lock up front (see bot.store.db), so claims serialise.
    """
    return list(session.scalars(
        select(model).where(*where).order_by(order_by).limit(limit)
        .with_for_update(skip_locked=True)
    ))
