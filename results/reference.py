"""Published reference tables (the V-JEPA paper's frozen-evaluation numbers) kept as data."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REFERENCE_TABLES = Path(__file__).parent / "reference" / "paper_tables.yaml"


def load_reference_tables(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The paper tables as a dict: paper -> table -> {source, protocol, columns, rows}.

    By default `paper_tables.yaml` and then every other `*.yaml` beside it (sorted by name),
    merged paper by paper; a table defined in two files is an error."""
    path = Path(path) if path is not None else REFERENCE_TABLES
    if not path.exists():
        raise FileNotFoundError(f"reference tables not found at {path}; the package ships them "
                                f"in results/reference/paper_tables.yaml")
    data = _read(path)
    if path == REFERENCE_TABLES:
        for extra in sorted(path.parent.glob("*.yaml")):
            if extra == path:
                continue
            for paper, tables in _read(extra).items():
                merged = data.setdefault(paper, {})
                for table, body in (tables or {}).items():
                    if table in merged:
                        raise ValueError(f"{extra}: table {paper}/{table} is already defined in "
                                         f"another reference file")
                    merged[table] = body
    return data


def _read(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a mapping of reference tables")
    return data
