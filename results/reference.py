"""Published reference tables (the V-JEPA paper's frozen-evaluation numbers) kept as data."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REFERENCE_TABLES = Path(__file__).parent / "reference" / "paper_tables.yaml"


def load_reference_tables(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The paper tables as a dict: paper -> table -> {source, protocol, columns, rows}."""
    import yaml

    path = Path(path) if path is not None else REFERENCE_TABLES
    if not path.exists():
        raise FileNotFoundError(f"reference tables not found at {path}; the package ships them "
                                f"in results/reference/paper_tables.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a mapping of reference tables")
    return data
