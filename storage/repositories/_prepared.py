"""Hot executemany statements, compiled once per dialect and sent to the driver as they are.

Through Core, every execution of a statement costs a cache-key walk and then ~20 µs of Python per
row (parameter dictionaries, type processing, positional conversion) before the driver sees it;
the vote writer sends 150-250 rows per batch, so that was most of its time. A `Prepared`
statement is compiled once per dialect. Each execution applies only the columns' own bind
processors (the functions Core itself would apply, so values are stored exactly as Core stores
them) and hands positional tuples to the driver with `exec_driver_sql`, in the session's
transaction. Errors are SQLAlchemy's (IntegrityError and so on), with parameters hidden as the
engine is configured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import CursorResult, Dialect, Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert, Update

_Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    values: Callable[[_Row], tuple[Any, ...]]  # a row's parameters, in the statement's order


class Prepared:
    """An INSERT or UPDATE run with many rows of named parameters (`keys`: the columns an
    INSERT sets; an UPDATE names its parameters with `bindparam`). Values written into the
    statement (`column + 1`, `x=None`) are constants, the same for every row."""

    def __init__(self, statement: Insert | Update, keys: Sequence[str] = ()) -> None:
        # `inline`: no RETURNING of generated keys (PostgreSQL would add it to an INSERT).
        self._statement = statement.inline() if isinstance(statement, Insert) else statement
        self._keys = list(keys)
        self._compiled: dict[str, _Compiled] = {}

    async def execute_many(self, session: AsyncSession, rows: Sequence[_Row]) -> CursorResult[Any]:
        connection = await session.connection()
        compiled = self._for(connection.dialect)
        values = compiled.values
        return await connection.exec_driver_sql(compiled.sql, [values(row) for row in rows])

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = self._compile(dialect)
        return compiled

    def _compile(self, dialect: Dialect) -> _Compiled:
        core = self._statement.compile(dialect=dialect, column_keys=self._keys or None)
        order = core.positiontup
        if not dialect.positional or order is None:
            raise ValueError(f"{dialect.name}: only positional drivers are supported")
        processors = [core.binds[name].type.bind_processor(dialect) for name in order]
        # A required parameter comes from each row; any other is a constant of the statement.
        constants: dict[int, Any] = {}
        from_rows: list[str] = []
        for i, name in enumerate(order):
            bind = core.binds[name]
            if bind.required:
                from_rows.append(name)
            else:
                process = processors[i]
                value = bind.effective_value
                constants[i] = process(value) if process is not None else value
        typed = [
            (i, process)
            for i, process in enumerate(processors)
            if process is not None and i not in constants
        ]
        pick = itemgetter(*from_rows) if from_rows else None

        def values(row: _Row) -> tuple[Any, ...]:
            picked: Any = pick(row) if pick is not None else ()
            if len(from_rows) == 1:
                picked = (picked,)
            if constants:
                given = iter(picked)
                converted = [
                    constants[i] if i in constants else next(given) for i in range(len(order))
                ]
            else:
                converted = list(picked)
            for i, process in typed:
                converted[i] = process(converted[i])
            return tuple(converted)

        return _Compiled(sql=core.string, values=values)


class PreparedLookup:
    """A SELECT whose only parameter is a list of values for one expanding IN (`bindparam(...,
    expanding=True)`), compiled once per dialect and list length and sent to the driver as it
    is. The rows come back as the driver gives them: select only columns whose driver values
    need no conversion (strings, integers)."""

    def __init__(self, statement: Select[Any], parameter: str) -> None:
        self._statement = statement
        self._parameter = parameter
        self._compiled: dict[tuple[str, int], str] = {}

    async def all(self, session: AsyncSession, values: Sequence[Any]) -> Sequence[Any]:
        connection = await session.connection()
        key = (connection.dialect.name, len(values))
        sql = self._compiled.get(key)
        if sql is None:
            sql = self._compiled[key] = self._compile(connection.dialect, len(values))
        result = await connection.exec_driver_sql(sql, tuple(values))
        return result.all()

    def _compile(self, dialect: Dialect, count: int) -> str:
        # Rendered with one placeholder per value (the values themselves are sent apart).
        placeholders = self._statement.params({self._parameter: [None] * count})
        rendered = placeholders.compile(
            dialect=dialect, compile_kwargs={"render_postcompile": True}
        )
        if not dialect.positional or rendered.positiontup is None:
            raise ValueError(f"{dialect.name}: only positional drivers are supported")
        return rendered.string
