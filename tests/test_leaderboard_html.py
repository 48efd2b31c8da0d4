"""The HTML leaderboard in a real browser: headless Chromium renders the page, a screenshot is
taken, and the table's cells are read back from the DOM after its script ran (sorting too)."""
import html
import re
import shutil
import subprocess

import pytest

from results import ResultStore, leaderboard, render
from tests.test_leaderboard_cells import COLUMNS, EXPECTED, ROWS, build_store

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")


def _chromium(*args, timeout=90):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-dev-shm-usage", "--user-data-dir=" + args[0], *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _cells(dom: str) -> list[list[str]]:
    body = dom.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
            for r in rows]


def test_html_leaderboard_renders_in_chromium(tmp_path):
    root = build_store(tmp_path / "store")
    page = tmp_path / "board.html"
    page.write_text(render(leaderboard(ResultStore(root).frame()), "html"), encoding="utf-8")
    profile = str(tmp_path / "profile")

    shot = tmp_path / "board.png"
    out = _chromium(profile, f"--screenshot={shot}", "--window-size=1400,600", page.as_uri())
    assert shot.is_file() and shot.stat().st_size > 5000, out.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = _chromium(profile, "--dump-dom", page.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    headers = [html.unescape(h) for h in re.findall(r"<th(?: [^>]*)?>(.*?)</th>", out.stdout)]
    assert headers == ["encoder", "checkpoint", *COLUMNS, "mean rank"]
    cells = _cells(out.stdout)
    assert [tuple(r[:2]) for r in cells] == ROWS
    for r in cells:
        for i, col in enumerate(COLUMNS):
            assert r[2 + i] == EXPECTED.get((tuple(r[:2]), col), "-")

    # #sort=4 sorts by the 8-frame k400 column on load (by the page's own script), best first
    # and empty cells last.
    out = _chromium(profile, "--dump-dom", page.as_uri() + "#sort=4")
    sorted_rows = _cells(out.stdout)
    assert sorted_rows[0][:2] == list(ROWS[0]) and sorted_rows[0][4] == "75*"
    assert 'class="sorted-desc"' in out.stdout
    # ... and by checkpoint name, as text
    out = _chromium(profile, "--dump-dom", page.as_uri() + "#sort=1")
    assert [r[1] for r in _cells(out.stdout)] == sorted((r[1] for r in cells), reverse=True)
