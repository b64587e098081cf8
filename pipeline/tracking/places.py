"""Where an embedded SQLite tracking store keeps its database and its runs' artifacts.

No MLflow import: the UI launcher (`pipeline.ui`) and the tracking store share this.
"""

from __future__ import annotations

from pathlib import Path


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> str | None:
    """`artifacts/` beside an embedded SQLite store's database file, as a URI; None for any
    other store (a server keeps its own)."""
    db = sqlite_path(uri)
    return None if db is None else (db.parent.resolve() / "artifacts").as_uri()
