"""The papers' tables beside ours: published number, ours under the matching protocol, the
difference, and for each cell we lack the `harness run` command that would fill it.

The published numbers are data (`results/reference/paper_tables.yaml`, each table with its
source; cells the sources disagree on are listed as `uncertain` and marked `?`). This module
says how a table's rows and columns map onto this harness: which registry encoder a row is,
which task a column is, and which protocol fields a record must have to count as the paper's
protocol. Rows and columns without a counterpart here are shown with the reason.

A row is the registry entry at its registry size: records of an encoder whose architecture was
overridden (`record.encoder.label`, e.g. `videomae_vits (embed_dim 192, depth 2)`) never fill
it, nor do records whose protocol departs from the task's published one
(`record.protocol_departures`) in more than the fields the table itself checks. A table whose
reference data carries a `recipe` (V-JEPA 2's: its probe, optimiser and head grid per task and
row) counts only records run under it, and its fill-in commands set it. Fill-in
commands are shell-quoted and carry `task.data.root=` where a data root is known (`--data-root
TASK=DIR`, else the root the newest record of the task ran on).
"""
from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from results.record import PROTOCOL_VERSION, protocol_id

# Column -> task name in the registry.
# The number a column reports: top-1 accuracy, AVA's frame mAP (percent) for AVA, and for the
# violation-of-expectation tasks the intuitive-physics paper's headline (harness/voe_metrics.py).
METRIC_OF = {"ava": "mAP", "intphys": "paper_relative_mean", "grasp": "paper_relative_mean",
             "inflevel": "paper_relative_mean"}
# The paper's AVA probe is its own (a linear classifier on RoIAligned layer taps: roi_linear).
PROBE_OF = {"ava": "roi_linear"}
TASK_OF = {"K400": "k400", "SSv2": "ssv2", "AVA": "ava", "IN1K": "in1k", "Places205": "places205",
           "iNat21": "inat21", "Diving48": "diving48", "Jester": "jester", "COIN": "coin",
           "EK100": "ek100", "IntPhys": "intphys", "GRASP": "grasp", "InfLevel-lab": "inflevel"}
# Columns that are no frozen evaluation of one checkpoint (fine-tuning, averages).
NOT_FROZEN = {"K400_ft": "end-to-end fine-tuning, not a frozen evaluation",
              "SSv2_ft": "end-to-end fine-tuning, not a frozen evaluation",
              "Avg": "an average of the other columns"}

# Row (method as the paper prints it) -> registry encoder, and the released file's name.
ENCODER_OF = {
    "V-JEPA ViT-L/16": ("vjepa_vitl", "vitl16.pth.tar"),
    "V-JEPA ViT-H/16": ("vjepa_vith", "vith16.pth.tar"),
    "V-JEPA ViT-H/16_384": ("vjepa_vith384", "vith16-384.pth.tar"),
    "VideoMAE ViT-H/16": ("videomae_vith", None),
    "VideoMAE ViT-L/16": ("videomae_vitl", None),
    "VideoMAEv2 ViT-g/14": ("videomaev2_vitg", None),
    "V-JEPA 2 ViT-L": ("vjepa2_vitl", "vitl.pt"),
    "V-JEPA 2 ViT-H": ("vjepa2_vith", "vith.pt"),
    "V-JEPA 2 ViT-g": ("vjepa2_vitg", "vitg.pt"),
    "V-JEPA 2 ViT-g384": ("vjepa2_vitg384", "vitg-384.pt"),
}

# The evaluation views of the V-JEPA paper's main protocol, and of its ablations (one view).
_MAIN_VIEWS = {"k400": (16, 8, 3), "ssv2": (16, 2, 3)}
_ONE_VIEW = {"k400": (16, 1, 1), "ssv2": (16, 1, 1)}


@dataclass(frozen=True)
class TableSpec:
    name: str                       # what `harness table NAME` takes
    paper: str                      # key in paper_tables.yaml
    table: str
    title: str
    views: dict = field(default_factory=lambda: dict(_MAIN_VIEWS))
    probe: str | None = "attentive"  # None: no probe (a violation-of-expectation table)
    low_shot: bool = False
    full_labels: str | None = None  # the table giving each row's full-label number (low-shot)
    note: str | None = None


TABLES = {s.name: s for s in [
    TableSpec("vjepa-frozen", "vjepa_2024", "table6_sota_frozen",
              "V-JEPA (2024) Table 6: frozen evaluation across methods and tasks"),
    TableSpec("vjepa-low-shot", "vjepa_2024", "table7_low_shot_frozen",
              "V-JEPA (2024) Table 7: low-shot frozen evaluation (5/10/50% of labels)",
              low_shot=True, full_labels="table6_sota_frozen"),
    TableSpec("vjepa-pixel-vs-latent", "vjepa_2024", "table1_pixel_vs_feature_target",
              "V-JEPA (2024) Table 1: pixel vs latent (feature) prediction targets",
              views=dict(_ONE_VIEW),
              note="rows are ViT-L/16 pretrained by the authors for the ablation (no released "
                   "weights): pretrain with `harness pretrain` and evaluate with --checkpoint"),
    TableSpec("vjepa-masking", "vjepa_2024", "table4_masking",
              "V-JEPA (2024) Table 4: masking strategies", views=dict(_ONE_VIEW),
              note="rows are ablation checkpoints (no released weights)"),
    TableSpec("vjepa-pretraining-data", "vjepa_2024", "table2_pretraining_data",
              "V-JEPA (2024) Table 2: pretraining data", views=dict(_ONE_VIEW),
              note="rows are ablation checkpoints (no released weights)"),
    TableSpec("vjepa-vs-pixel-methods", "vjepa_2024", "table5_vs_pixel_prediction",
              "V-JEPA (2024) Table 5: against pixel-prediction methods"),
    TableSpec("vjepa2-frozen", "vjepa2_2025", "frozen_classification_and_anticipation",
              "V-JEPA 2 (2025) Tables 4-5: frozen classification and EK100 anticipation",
              probe="attentive_v2", views={},
              note="the V-JEPA 2 release's protocol exactly (results/reference/vjepa2_frozen.yaml "
                   "recipe): attentive_v2 with its optimiser (optim_groups: release), its head "
                   "grid and the best head on the evaluation split (selection: eval_max), as "
                   "its published numbers were chosen"),
    TableSpec("vjepa-intphys", "garrido_2025", "figure1_pairwise",
              "Garrido et al. (2025) Figure 1A: intuitive physics from the predictor's surprise "
              "(pairwise accuracy, %)", views={}, probe=None,
              note="no probe is trained: each record scores the checkpoint's predictor on every "
                   "pair (`harness run --task intphys|grasp|inflevel`); the number is the "
                   "paper's headline, the best context length per property on the evaluation "
                   "pairs, averaged over properties (`paper_relative_mean`)"),
]}


def table_names(reference: dict) -> list[tuple[str, str]]:
    """(name, title) of every table: the curated ones, then any other in the reference data as
    `paper/table`."""
    out = [(s.name, s.title) for s in TABLES.values()]
    curated = {(s.paper, s.table) for s in TABLES.values()}
    for paper, tables in reference.items():
        for table, body in (tables or {}).items():
            if isinstance(body, dict) and "rows" in body and (paper, table) not in curated:
                out.append((f"{paper}/{table}", str(body.get("source", ""))))
    return out


def spec_for(name: str, reference: dict) -> TableSpec | None:
    """The table called `name`, or None."""
    if name in TABLES:
        return TABLES[name]
    if "/" in name:
        paper, table = name.split("/", 1)
        body = (reference.get(paper) or {}).get(table)
        if isinstance(body, dict) and "rows" in body:
            return TableSpec(name, paper, table, f"{paper} {table}: {body.get('source', '')}")
    return None


@dataclass
class PaperCell:
    column: str
    published: Any = None          # number, or {mean, std} for low-shot cells
    uncertain: bool = False
    ours: float | None = None
    ours_std: float | None = None
    runs: int = 0
    protocol_id: str | None = None
    command: str | None = None     # fills the cell when ours is missing
    why_not: str | None = None     # why no command can fill it
    drop: float | None = None      # low-shot: relative drop from full labels (published), %

    @property
    def diff(self) -> float | None:
        pub = self.published.get("mean") if isinstance(self.published, dict) else self.published
        if self.ours is None or not isinstance(pub, (int, float)):
            return None
        return self.ours - float(pub)


@dataclass
class PaperTable:
    spec: TableSpec
    source: str
    protocol: str
    columns: list[str]
    rows: list[tuple[str, list[PaperCell]]]
    notes: list[str]


def _columns(body: dict) -> list[str]:
    if body.get("columns"):
        return list(body["columns"])
    cols: list[str] = []
    for row in (body.get("rows") or {}).values():
        for key, value in row.items():
            if key in ("uncertain", "note") or key in cols:
                continue
            if isinstance(value, (int, float)) or (isinstance(value, dict)):
                cols.append(key)
    return cols


def _low_shot_columns(body: dict) -> list[str]:
    cols: list[str] = []
    for row in (body.get("rows") or {}).values():
        for task, fractions in row.items():
            if isinstance(fractions, dict):
                for frac in fractions:
                    if f"{task} {frac}" not in cols:
                        cols.append(f"{task} {frac}")
    return cols


def table_tasks(spec: TableSpec, reference: dict) -> list[str]:
    """The registry tasks a table's columns are: the only records it reads (its cells, its
    notes, its fill-in commands' data roots)."""
    body = (reference.get(spec.paper) or {}).get(spec.table)
    if not isinstance(body, dict):
        return []
    columns = _low_shot_columns(body) if spec.low_shot else _columns(body)
    names = [c.split(" ", 1)[0] if spec.low_shot else c for c in columns]
    return sorted({TASK_OF[n] for n in names if n in TASK_OF})


def fraction_of(column_fraction: str) -> float:
    """A low-shot column's label fraction: "10%" -> 0.1."""
    return float(column_fraction.rstrip("%")) / 100.0


def matches(protocol: dict, spec: TableSpec, task: str, fraction: float | None = None,
            recipe: dict | None = None) -> bool:
    """Is a record's protocol the one the table's numbers were measured under? A run on a
    label-efficiency fold (`train_fold`) matches only the low-shot cell of its fraction. With
    a `recipe` (`recipe_for`) the record must have every probe and task field it names."""
    if not isinstance(protocol, dict):
        return False
    if spec.probe is None or (protocol.get("task") or {}).get("kind") == "voe":
        # A violation-of-expectation record: no probe and no fold; its sampling is the task's
        # (a departure keeps it out of the cell, `_candidates`).
        return (spec.probe is None and fraction is None
                and (protocol.get("task") or {}).get("kind") == "voe"
                and int(protocol.get("protocol_version") or 1) == PROTOCOL_VERSION)
    fold = (protocol.get("task") or {}).get("train_fold")
    if (fold is None) != (fraction is None):
        return False
    if fold is not None and abs(float(fold.get("fraction", -1)) - fraction) > 1e-9:
        return False
    if int(protocol.get("protocol_version") or 1) != PROTOCOL_VERSION:
        return False
    if recipe is not None:
        return _has_recipe(protocol, recipe)
    probe = protocol.get("probe") or {}
    if probe.get("kind") != PROBE_OF.get(task, spec.probe) or probe.get("selection") == "eval_max":
        return False
    want = spec.views.get(task)
    if want is not None:
        s = (protocol.get("task") or {}).get("sampling") or {}
        have = (s.get("frames_per_clip"), s.get("eval_segments"), s.get("eval_views"))
        if have != want:
            return False
    return True


def build(spec: TableSpec, reference: dict, frame, *, known_tasks: set[str],
          command=None, data_roots: dict[str, str] | None = None) -> PaperTable:
    """The table with our cells filled from `frame` (a ResultStore frame; may be empty).
    `command(encoder, release_file, task, spec, data_root=None)` returns the fill-in command for
    a cell (argv list or shell text); `data_roots` {task: folder} (default: what the records
    ran on, `data_roots(frame)`) go into the commands as `task.data.root=`."""
    roots = {**known_data_roots(frame), **(data_roots or {})}
    paper = reference.get(spec.paper) or {}
    body = paper.get(spec.table)
    if not isinstance(body, dict):
        raise ValueError(f"the reference data has no table {spec.paper}/{spec.table}")
    columns = _low_shot_columns(body) if spec.low_shot else _columns(body)
    full = (paper.get(spec.full_labels) or {}).get("rows", {}) if spec.full_labels else {}
    allowed = recipe_departures(body)
    notes = []
    rows = []
    for method, row in (body.get("rows") or {}).items():
        uncertain = set(row.get("uncertain") or [])
        encoder, release = ENCODER_OF.get(method, (None, None))
        cells = []
        for col in columns:
            if spec.low_shot:
                task_col, frac = col.split(" ", 1)
                published = (row.get(task_col) or {}).get(frac)
            else:
                task_col, frac = col, None
                published = row.get(col)
            cell = PaperCell(col, published, uncertain=col in uncertain or task_col in uncertain)
            if spec.low_shot and isinstance(published, dict):
                full_value = (full.get(method) or {}).get(task_col)
                if isinstance(full_value, (int, float)) and full_value:
                    cell.drop = 100.0 * (float(full_value) - float(published["mean"])) / float(full_value)
            task = TASK_OF.get(task_col)
            recipe = recipe_for(body, method, task) if task else None
            if col in NOT_FROZEN or task_col in NOT_FROZEN:
                cell.why_not = NOT_FROZEN.get(col) or NOT_FROZEN[task_col]
            elif encoder is None:
                cell.why_not = "no registry encoder for this row"
            elif task is None:
                cell.why_not = f"no task for column {task_col}"
            elif task not in known_tasks:
                cell.why_not = f"task {task} is not in the registry yet"
            elif recipe is not None and recipe.get("why_not"):
                cell.why_not = str(recipe["why_not"])
            elif spec.low_shot:
                _fill_low_shot(cell, frame, encoder, task, spec, fraction_of(frac))
                if cell.ours is None and command is not None:
                    # The folds are written under the data root and read from it: one root for
                    # both commands (a placeholder where none is known).
                    root = roots.get(task) or f"DATA/{task}"
                    cell.command = _low_shot_command(
                        command(encoder, release, task, spec, data_root=root), task,
                        fraction_of(frac), root)
            else:
                _fill(cell, frame, encoder, task, spec, recipe, allowed)
                if cell.ours is None and command is not None:
                    run = command(encoder, release, task, spec, data_root=roots.get(task))
                    cell.command = shell_text(_with_recipe(run, recipe))
            cells.append(cell)
        rows.append((method, cells))
        if row.get("note"):
            notes.append(f"{method}: {row['note']}")
    notes += _left_out_notes(frame, body, spec, allowed)
    if spec.note:
        notes.insert(0, spec.note)
    return PaperTable(spec, str(body.get("source", "")), str(body.get("protocol", "")),
                      columns, rows, notes)


LOW_SHOT_SEEDS = (0, 1, 2)  # the paper: 3 random splits per fraction


def shell_text(command) -> str:
    """A command as one shell line: an argv list quoted token by token (shlex), text as is."""
    return command if isinstance(command, str) else shlex.join(str(c) for c in command)


def hydra_value(text: str) -> str:
    """A value as Hydra's override grammar reads it back unchanged: quoted where it holds
    characters the grammar (or a reader) treats specially, in double quotes (they read better
    inside the shell's single quotes) unless the value holds one. Inside quotes Hydra unescapes
    only the backslashes before a quote or the closing quote, so only those are doubled."""
    text = str(text)
    if not any(c in text for c in " ,[]{}()=:'\"\\*?$;&|<>`#~"):
        return text
    quote = "'" if '"' in text and "'" not in text else '"'
    escaped = re.sub(r"(\\*)(%s|$)" % re.escape(quote),
                     lambda m: m.group(1) * 2 + ("\\" + quote if m.group(2) else ""), text)
    return quote + escaped + quote


def _low_shot_command(run, task: str, fraction: float, root: str) -> str:
    pct = f"{100 * fraction:g}pct"
    seeds = ",".join(str(s) for s in LOW_SHOT_SEEDS)
    split = ["harness", "data", "split", task, "--root", root, "--fraction", f"{fraction:g}",
             "--seeds", seeds]
    if isinstance(run, str):
        runs = [f"{run} --split {pct}:seed{s}" for s in LOW_SHOT_SEEDS]
    else:
        runs = [shlex.join([*map(str, run), "--split", f"{pct}:seed{s}"]) for s in LOW_SHOT_SEEDS]
    return "; ".join([shlex.join(split), *runs])


def known_data_roots(frame) -> dict[str, str]:
    """{task: the data root its newest record ran on}, read from the records' one-line commands
    (`task.data.root=...`); tasks whose records name none are left out. A frame without the
    records' text (read through the index) has their files read, newest first, until one
    names a root: one file per task, not the whole store."""
    if frame is None or frame.empty or "record" not in frame:
        return {}
    roots: dict[str, str] = {}
    ordered = frame.sort_values("created", kind="stable")
    for task, text, path in zip(ordered["task"].iloc[::-1], ordered["record"].iloc[::-1],
                                ordered["path"].iloc[::-1]):
        if str(task) in roots:
            continue
        root = _root_in(text if isinstance(text, str) else _file_text(path))
        if root:
            roots[str(task)] = root
    return roots


def _file_text(path) -> str | None:
    from results.record import RecordError, read_record

    if not isinstance(path, str):
        return None
    try:
        return json.dumps(read_record(path))
    except (OSError, RecordError):
        return None


def _root_in(record_text) -> str | None:
    try:
        command = (json.loads(record_text).get("extra") or {}).get("command")
        tokens = shlex.split(command) if isinstance(command, str) else []
    except (TypeError, ValueError, AttributeError):
        return None
    root = None
    for token in tokens:
        key, eq, value = token.partition("=")
        if eq and key.lstrip("+~") == "task.data.root" and value:
            root = _unquote_hydra(value)
    return root


def _unquote_hydra(value: str) -> str:
    """The value Hydra reads from a (possibly quoted) override value."""
    if len(value) < 2 or value[0] != value[-1] or value[0] not in "'\"":
        return value
    quote, inner = value[0], value[1:-1]

    def unescape(m):  # 2k backslashes -> k; 2k+1 before a quote -> k and the quote itself
        return "\\" * (len(m.group(1)) // 2) + m.group(2)
    return re.sub(r"(\\+)(%s|$)" % re.escape(quote), unescape, inner)


# Departures from the task's published protocol that a table's own checks already judge (its
# views and probe); a record departing in anything else is not the paper's protocol.
# Keyed as records write them (`harness.identity.departures` flattens the task config with no
# `task.` prefix).
CHECKED_DEPARTURES = ("sampling.frames_per_clip", "sampling.eval_segments", "sampling.eval_views")
# A label-efficiency fold is the low-shot table's own protocol, not a departure from it.
_FOLD_KEYS = ("train_fold", "manifests.train", "data.train")


def departs(departures, allowed: frozenset = frozenset()) -> list[str]:
    """The departures (dotted keys) that keep a record out of a paper's cell; `allowed`: those
    a table's recipe checks itself (`recipe_departures`)."""
    if not isinstance(departures, dict):
        return []
    return sorted(k for k in departures if k not in CHECKED_DEPARTURES and k not in allowed
                  and not str(k).startswith(_FOLD_KEYS))


def _candidates(frame, encoder: str, task: str, allowed: frozenset = frozenset()):
    """Records of the registry entry itself (not an overridden architecture, not random init)
    on `task`, without departures the table cannot judge."""
    sub = frame[(frame["encoder"] == encoder) & (frame["task"] == task)
                & (frame["checkpoint"] != "random-init")]
    if "encoder_label" in sub and len(sub):
        sub = sub[[not isinstance(lab, str) or lab in ("", encoder) for lab in sub["encoder_label"]]]
    if "protocol_departures" in sub and len(sub):
        sub = sub[[not departs(d, allowed) for d in sub["protocol_departures"]]]
    return sub


def _left_out_notes(frame, body: dict, spec: TableSpec,
                    allowed: frozenset = frozenset()) -> list[str]:
    """Say which records of the table's encoders were left out, and why."""
    if frame is None or frame.empty:
        return []
    wanted = {ENCODER_OF[m][0] for m in (body.get("rows") or {}) if m in ENCODER_OF}
    sub = frame[frame["encoder"].isin(wanted)]
    notes = []
    if "encoder_label" in sub:
        labels = sorted({lab for n, lab in zip(sub["encoder"], sub["encoder_label"])
                         if isinstance(lab, str) and lab and lab != n})
        if labels:
            notes.append(f"records of overridden architectures fill no paper row: "
                         f"{', '.join(labels)}")
    if "protocol_departures" in sub:
        keys = sorted({k for d in sub["protocol_departures"] for k in departs(d, allowed)})
        if keys:
            notes.append(f"records departing from the published protocol in "
                         f"{', '.join(keys)} fill no cell")
    return notes


def _fill_low_shot(cell: PaperCell, frame, encoder: str, task: str, spec: TableSpec,
                   fraction: float) -> None:
    """Mean and std over the folds (seeds) of one fraction, as the paper reports them: one run
    per seed (the newest), under one protocol apart from the fold itself (the base protocol of
    `results.label_efficiency`, which `harness plot low-shot` draws the same way)."""
    from results.label_efficiency import base_protocol

    if frame is None or frame.empty:
        return
    sub = _candidates(frame, encoder, task)
    sub = sub[[matches(p, spec, task, fraction) for p in sub["protocol"]]] if len(sub) else sub
    sub = sub[sub["top1"].notna()] if "top1" in sub and len(sub) else sub.iloc[0:0]
    if sub.empty:
        return
    # The folds of one fraction differ in their seed and training manifest only: group by the
    # rest of the protocol and keep the most-used group, one run per seed (the newest).
    groups: dict[str, dict[int, tuple]] = {}
    for _, row in sub.sort_values("created").iterrows():
        seed = int(row["protocol"]["task"]["train_fold"]["seed"])
        key = protocol_id(base_protocol(row["protocol"]))
        groups.setdefault(key, {})[seed] = (float(row["top1"]), row["protocol_id"])
    by_seed = max(groups.values(), key=len)
    values = [v for v, _ in by_seed.values()]
    cell.ours = sum(values) / len(values)
    cell.runs = len(values)
    cell.protocol_id = ",".join(sorted({pid for _, pid in by_seed.values()}))
    if len(values) > 1:
        cell.ours_std = math.sqrt(sum((v - cell.ours) ** 2 for v in values) / (len(values) - 1))


def _fill(cell: PaperCell, frame, encoder: str, task: str, spec: TableSpec,
          recipe: dict | None = None, allowed: frozenset = frozenset()) -> None:
    if frame is None or frame.empty:
        return
    sub = _candidates(frame, encoder, task, allowed)
    sub = sub[[matches(p, spec, task, recipe=recipe) for p in sub["protocol"]]] if len(sub) else sub
    metric = METRIC_OF.get(task, "top1")
    sub = sub[sub[metric].notna()] if metric in sub and len(sub) else sub.iloc[0:0]
    if sub.empty:
        return
    # Several matching protocols (e.g. other data roots): the most-used one, newest first.
    pid = sub.groupby("protocol_id")["created"].agg(["size", "max"]).sort_values(
        ["size", "max"], ascending=False).index[0]
    values = [float(v) for v in sub[sub["protocol_id"] == pid][metric]]
    cell.ours = sum(values) / len(values)
    cell.runs = len(values)
    cell.protocol_id = pid
    if len(values) > 1:
        cell.ours_std = math.sqrt(sum((v - cell.ours) ** 2 for v in values) / (len(values) - 1))


# ----- a table's recipe: the protocol its numbers were measured under, per task and row -------

def recipe_for(body: dict, method: str, task: str) -> dict | None:
    """`{"probe": {...}, "task": {dotted key: value}, "why_not": str | None}` for one cell of a
    table whose reference data has a `recipe` (the table's probe fields, then its task's, then
    its row's for that task); None for a table without one."""
    recipe = body.get("recipe")
    if not isinstance(recipe, dict):
        return None
    out = {"probe": dict(recipe.get("probe") or {}), "task": {}, "why_not": None}
    for part in ((recipe.get("tasks") or {}).get(task),
                 ((recipe.get("rows") or {}).get(method) or {}).get(task)):
        part = part or {}
        out["probe"].update(part.get("probe") or {})
        out["task"].update(part.get("task") or {})
        out["why_not"] = part.get("why_not") or out["why_not"]
    return out


def recipe_departures(body: dict) -> frozenset:
    """The departures from a published task that a table's recipe checks itself: each task
    field it sets, keyed as records write them (`sampling.frame_step`, `optim.clip_grad_norm`:
    `harness.identity.departures` flattens the task config without a `task.` prefix)."""
    recipe = body.get("recipe")
    if not isinstance(recipe, dict):
        return frozenset()
    parts = list((recipe.get("tasks") or {}).values())
    parts += [p for row in (recipe.get("rows") or {}).values() for p in (row or {}).values()]
    return frozenset(k for p in parts for k in ((p or {}).get("task") or {}))


def _field(protocol: dict, dotted: str):
    """A task-config field in a record's protocol: `optim.X` is the protocol's optim block,
    the rest lives under its task block."""
    node = protocol.get("optim") if dotted.startswith("optim.") else protocol.get("task")
    keys = dotted.split(".")[1:] if dotted.startswith("optim.") else dotted.split(".")
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


_MISSING = object()


def _same(a, b) -> bool:
    """Equal as YAML values: numbers by value (1e-3 == 0.001), lists and dicts element-wise."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _has_recipe(protocol: dict, recipe: dict) -> bool:
    probe = protocol.get("probe") or {}
    if not all(_same(probe.get(k), v) for k, v in recipe["probe"].items()):
        return False
    return all(_same(_field(protocol, k), v) for k, v in recipe["task"].items())


def _override_value(value) -> str:
    """A YAML value as Hydra's override grammar reads it back (null, numbers, [lists], {dicts})."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_override_value(v)}" for k, v in value.items()) + "}"
    return hydra_value(str(value))


def recipe_overrides(recipe: dict | None) -> list[str]:
    """The `harness run` overrides that run a cell's recipe (`++` adds a probe key the probe's
    YAML may not have, or sets it)."""
    if not recipe:
        return []
    out = [f"++probe.{k}={_override_value(v)}" for k, v in recipe["probe"].items() if k != "kind"]
    return out + [f"task.{k}={_override_value(v)}" for k, v in recipe["task"].items()]


def _with_recipe(run, recipe: dict | None):
    extra = recipe_overrides(recipe)
    if not extra:
        return run
    return f"{run} {shlex.join(extra)}" if isinstance(run, str) else [*run, *extra]
