"""8 processes write records through the run's writer while another reads leaderboards through
the index: nothing is lost and no row is ever torn (no timing is asserted)."""
import multiprocessing
from types import SimpleNamespace

import pandas as pd

from results import ResultStore, leaderboard, make_record
from results.index import INDEX_NAME

WRITERS, EACH = 8, 12


def _write(root, worker: int) -> None:
    from harness.record_writer import write_run_record

    plan = SimpleNamespace(settings=SimpleNamespace(out=root))
    for i in range(EACH):
        # top1, seed and the run id all say (worker, i): a row mixing two records shows
        rec = make_record(encoder={"name": f"enc{worker}"}, checkpoint={"random_init": True},
                          task="k400", split="val", protocol={"probe": {"kind": "linear"}},
                          metrics={"top1": float(worker * EACH + i), "num_samples": 10},
                          data_problems={}, timings={}, seed=i, device="cpu",
                          extra={"run_id": f"{worker:02d}{i:04d}" + "0" * 10})
        write_run_record(plan, rec, None, f"{worker:02d}{i:04d}" + "0" * 10)


def _check(frame) -> None:
    if frame.empty:  # read before the first record was written: no metric columns yet
        return
    for enc, seed, top1, run in zip(frame["encoder"], frame["seed"], frame["top1"],
                                    frame["run_id"]):
        worker = int(enc[3:])
        assert top1 == worker * EACH + seed and run == f"{worker:02d}{seed:04d}" + "0" * 10


def test_eight_writers_and_a_reader_lose_nothing_and_tear_nothing(tmp_path):
    root = tmp_path / "store"
    (root / "records").mkdir(parents=True)
    ResultStore(root).frame()  # the index exists: writers add their rows to it
    assert (root / INDEX_NAME).is_file()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write, args=(root, w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    seen = []
    while any(p.is_alive() for p in procs) or not seen:
        store = ResultStore(root)
        frame = store.frame(text=False)
        assert not store.scan and store.problems == [] and store.conflicts == []
        _check(frame)
        if len(frame):
            leaderboard(frame, significance=False)
        seen.append(len(frame))
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert seen == sorted(seen)  # records only ever appear
    index, scan = ResultStore(root), ResultStore(root, scan=True)
    frame = index.frame()
    assert len(frame) == WRITERS * EACH and index.problems == []
    _check(frame)
    pd.testing.assert_frame_equal(frame, scan.frame())
    cell = leaderboard(frame, significance=False).cells[(("enc3", "random-init"),
                                                         "k400 (linear)")]
    assert cell.runs == EACH
