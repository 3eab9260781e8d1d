"""The HTML report in a real browser: headless Chromium (Debian's package, installed by
``.ci/run``), run inside a network namespace with nothing but loopback, so the page has no
network to load anything from. A script added to a copy of the page writes into the DOM
whether every image decoded and what the loss table says; ``--dump-dom`` hands it back."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

from astropix_hil.cli import main
from astropix_hil.fileio import ApxReader, write_apx

from .monitor_helpers import emulate
from .netns import made_netns

TIMEOUT = 120

_PROBE = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(
    (img) => ({id: img.id, complete: img.complete, width: img.naturalWidth}));
  const loss = {};
  for (const cell of document.querySelectorAll("#loss td[data-column]")) {
    loss[cell.dataset.column] = cell.textContent;
  }
  const out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify({images, loss});
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    return path


@pytest.fixture
def ns():
    yield from made_netns()


def test_report_loads_offline_every_image_decodes_and_the_loss_table_has_the_numbers(
        ns, tmp_path):
    run = emulate(tmp_path / "run.apx", "--seed", "9", "--mode", "poisson", "--rate", "5000",
                  "--chips", "2", "--readouts", "600")
    with ApxReader(run) as reader:
        readouts = [r for r in reader if r.readout_id % 100 not in (10, 11, 12)]
    lossy = tmp_path / "lossy.apx"
    write_apx(lossy, readouts, {"run": "browser test"})
    report = tmp_path / "lossy.html"
    assert main(["report", str(lossy), "-o", str(report)]) == 0
    page = tmp_path / "probe.html"
    page.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    proc = ns.popen([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}",
                     "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=TIMEOUT)
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', out, re.S)
    assert found, f"no probe result (exit {proc.returncode}): {err[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert [i["id"] for i in result["images"]] == ["img-hitmap", "img-tot", "img-rates"]
    assert all(i["complete"] and i["width"] > 0 for i in result["images"]), result
    assert result["loss"]["received"] == str(len(readouts)) == "582"
    assert result["loss"]["lost"] == "18"  # ids 10-12 of each hundred (the last id is 599)
    assert result["loss"]["duplicated"] == "0" and result["loss"]["reordered"] == "0"
