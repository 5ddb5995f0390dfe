"""Rows of several tables in one round trip on PostgreSQL.

Each statement sent through SQLAlchemy's async layer costs a round trip and a few hundred
microseconds of CPU, so a group commit (dues.batch) that writes five tables pays for five of them.
On PostgreSQL the writes that do not depend on each other's results can go in one statement:
data-modifying CTEs, each an `INSERT ... SELECT ... FROM unnest(...)` over one array per column.
The SQL text does not depend on the number of rows, so it is prepared once per connection, and the
driver (asyncpg) encodes the arrays in C.

All the CTEs of a statement see the same snapshot: a row trigger that looks for rows inserted
by another CTE of the same statement does not find them (the ledger's balance trigger needs its
postings inserted by an earlier statement). Foreign keys between the CTEs' rows are fine: they
are checked at the end of the statement.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql


@functools.cache
def _array_type(table: Table, column: str) -> str:
    return table.c[column].type.compile(dialect=postgresql.dialect()) + "[]"


def unnest_insert(table: Table, columns: Sequence[str], *, name: str, ordered: bool = False) -> str:
    """`INSERT INTO table (columns) SELECT ... FROM unnest(:name_column, ...)`, one bound array per
    column (see `unnest_params`). ordered: the rows are inserted in the arrays' order, so serial ids
    are given in that order (as SQLAlchemy's own ordered multi-row INSERT relies on)."""
    arrays = ", ".join(f"CAST(:{name}_{column} AS {_array_type(table, column)})" for column in columns)
    names = ", ".join(f'"{column}"' for column in columns)
    if not ordered:
        return f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({arrays})'
    return (f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM unnest({arrays}) '
            f'WITH ORDINALITY AS u({names}, "_n") ORDER BY "_n"')


def unnest_params(name: str, columns: Sequence[str], rows: Iterable[dict]) -> dict[str, list]:
    """The bound arrays of `unnest_insert(..., name=name)` for `rows` (dicts by column)."""
    rows = list(rows)
    return {f"{name}_{column}": [row[column] for row in rows] for column in columns}
