"""Argument checks shared by the library's table-taking functions."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd


def require_columns(df: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    """Raises ValueError unless ``df`` is a DataFrame holding every column in ``columns``.

    Args:
        df: the table to check.
        columns: the columns it must have.
        name: how the argument is named in the message.
    """
    columns = list(columns)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing columns {missing}; expected at least {columns}, got {list(df.columns)}")
