"""The HTML report: what it shows, what it does without its inputs, and the page in a real browser.

The browser tests drive headless Chromium through Selenium and Debian's chromedriver; they are
skipped, saying what to install, where Chromium, chromedriver or the selenium package is missing.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.evaluation import evaluate_folders
from medseg.evaluation.report import _locate, write_report
from medseg.evaluation.report_svg import Series, line_chart, nice_ticks
from medseg.evaluation.report_volume import best_slice, subsample_indices, worst_slice
from medseg.io.image import read_image, write_image
from medseg.utils.files import write_json

SECTIONS = ("overview", "evaluation", "cases", "training", "plans", "dataset")


# ----------------------------------------------------------------------------- a workdir

def _fake_history(epochs: int) -> list[dict]:
    return [{"epoch": e + 1, "train_loss": 1.2 * 0.93 ** e, "val_loss": 1.25 * 0.94 ** e,
             "pseudo_dice": min(0.95, 0.1 + 0.03 * e), "pseudo_dice_ema": min(0.9, 0.08 + 0.028 * e),
             "lr": 0.01 * (1 - e / epochs) ** 0.9, "epoch_time_s": 4.0 + 0.1 * e} for e in range(epochs)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Fingerprint, plans, a fold's history and an evaluation of three held-out phantoms whose
    "predictions" are the references spoiled in known ways (no training: a few seconds)."""
    from medseg.data.phantoms import make_phantoms
    from medseg.demo import hold_out
    from medseg.pipeline import run_fingerprint, run_plan

    wd = tmp_path_factory.mktemp("report") / "wd"
    ds = wd / "Phantoms"
    make_phantoms(ds, cases=4, seed=5, shape_scale=0.6)
    hold_out(ds, 3)
    run_fingerprint(ds, wd)
    run_plan(ds, wd, budget_gb=1.0, device="cpu", base_features=8, max_patch_voxels=16 * 48 * 48)
    for i, ref_path in enumerate(sorted((ds / "labelsTs").iterdir())):
        ref = read_image(ref_path)
        a = ref.array.copy()
        if i == 0:  # organ shifted, lesion missed: the worst case
            a[a == 2] = 0
            a = np.roll(a, 2, axis=2)
        elif i == 1:  # organ eroded by one voxel
            a = np.where(a == 2, 2, ndimage.binary_erosion(a >= 1).astype(a.dtype))
        write_image(ref.with_array(a), wd / "predictions" / ref_path.name)
    evaluate_folders(wd / "predictions", ds / "labelsTs", dataset_json=ds / "dataset.json",
                     out_dir=wd / "evaluation", metrics=["dice", "hd95", "assd", "nsd", "volume_rel_diff"])
    fold = wd / "models" / "3d_fullres" / "fold_0"
    write_json(fold / "checkpoint_latest.json", {"epoch": 12, "total_epochs": 12, "history": _fake_history(12)})
    write_json(fold / "training.json", {"epochs": 12, "best_pseudo_dice_ema": 0.39, "elapsed_s": 50.0,
                                        "precision": "fp32", "train_cases": ["phantom_000"], "val_cases": []})
    write_json(fold.parent / "model.json", {"model": "dynunet"})
    return wd


@pytest.fixture(scope="module")
def report(workdir) -> Path:
    return write_report(workdir)


def _meta(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="medseg-meta">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def _volume(html: str, spec: dict) -> np.ndarray:
    m = re.search(rf'<script type="text/plain" id="{spec["data"]}">(.*?)</script>', html, re.S)
    raw = zlib.decompress(base64.b64decode(m.group(1)))
    planes = 3 if spec["has_image"] else 2
    return np.frombuffer(raw, np.uint8).reshape(planes, *spec["shape"])


# ----------------------------------------------------------------------------- the page

def test_page_has_every_section_and_needs_no_network(report):
    html = report.read_text()
    assert report == report.parent.parent / "evaluation" / "report.html"
    for sid in SECTIONS:
        assert f'<section class="block" id="{sid}">' in html
    assert 'class="missing"' not in html
    # Nothing is fetched: no src attribute, stylesheet link, import or url(); links are
    # in-page anchors or the PNGs written beside the page.
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"\ssrc=|<link|@import|url\(", html)
    for href in re.findall(r'href="([^"]*)"', html):
        assert href.startswith("#") or (report.parent / href).is_file(), href
    assert "Pseudo Dice" in html and "<svg" in html  # training curves
    assert "3d_fullres" in html and "patch size" in html  # plans
    assert "organ volume (mL)" in html  # dataset summary
    assert report.stat().st_size < 1_500_000


def test_cases_are_ordered_worst_first(workdir, report):
    summary = json.loads((workdir / "evaluation" / "summary.json").read_text())
    mean = {c["case"]: np.nanmean([np.nan if m["dice"] is None else m["dice"] for m in c["metrics"].values()])
            for c in summary["metric_per_case"]}
    expected = sorted(mean, key=lambda c: (mean[c], c))
    meta = _meta(report.read_text())
    assert [v["id"] for v in meta["viewers"]] == expected
    rows = re.findall(r'<tr><td data-sort="([^"]+)">', report.read_text().split('id="case-table"')[1])
    assert rows == expected


def test_embedded_volumes_hold_the_reference_and_prediction(workdir, report):
    html = report.read_text()
    for spec in _meta(html)["viewers"]:
        vol = _volume(html, spec)
        ref = read_image(workdir / "Phantoms" / "labelsTs" / f"{spec['id']}.nii.gz").array
        pred = read_image(workdir / "predictions" / f"{spec['id']}.nii.gz").array
        assert spec["has_image"] and spec["index"] is None and spec["shape"] == list(ref.shape)
        np.testing.assert_array_equal(vol[1], ref)
        np.testing.assert_array_equal(vol[2], pred)
        assert vol[0].std() > 10  # a windowed image, not a blank plane
        z, y, x = spec["start"]
        assert 0 <= z < ref.shape[0] and 0 <= y < ref.shape[1] and 0 <= x < ref.shape[2]


def test_png_overlays_of_worst_and_best_case(report):
    meta = _meta(report.read_text())
    worst, best = meta["viewers"][0]["id"], meta["viewers"][-1]["id"]
    (w,) = report.parent.glob(f"report_worst_{worst}_z*.png")
    (b,) = report.parent.glob(f"report_best_{best}_z*.png")
    for png in (w, b):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert png.name in report.read_text()


def test_large_cases_are_subsampled_and_the_page_says_so(workdir, tmp_path):
    out = write_report(workdir, tmp_path / "small.html", max_side=10, max_voxels=500, max_cases=2)
    html = out.read_text()
    meta = _meta(html)
    assert len(meta["viewers"]) == 2 and "Only the 2 worst of 3 cases have a viewer" in html
    for spec in meta["viewers"]:
        assert max(spec["shape"]) <= 10 and np.prod(spec["shape"]) <= 500
        assert spec["index"] is not None and len(spec["index"][1]) == spec["shape"][1]
        assert _volume(html, spec).shape[1:] == tuple(spec["shape"])
    assert "subsample of the" in html
    assert sorted(p.name.split("_")[1] for p in tmp_path.glob("small_*.png")) == ["best", "worst"]


def test_second_run_replaces_old_overlays(workdir, tmp_path):
    out = tmp_path / "r.html"
    (tmp_path / "r_worst_gone_z001.png").write_bytes(b"old")
    write_report(workdir, out)
    assert not (tmp_path / "r_worst_gone_z001.png").exists()
    assert len(list(tmp_path.glob("r_*.png"))) == 2


def test_missing_images_show_labels_on_black(workdir, tmp_path):
    empty = tmp_path / "no_images"
    empty.mkdir()
    html = write_report(workdir, tmp_path / "r.html", images_dir=empty).read_text()
    assert all(not v["has_image"] for v in _meta(html)["viewers"])
    assert "image not found: labels are shown on black" in html


def test_empty_workdir_says_what_is_missing(tmp_path):
    html = write_report(tmp_path).read_text()
    assert html.count('class="missing"') >= 5
    for phrase in ("No evaluation summary", "No case viewers", "No trained models", "No plans", "No fingerprint"):
        assert phrase in html
    assert _meta(html)["viewers"] == []


def test_without_summary_pairs_predictions_and_references(workdir, tmp_path):
    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("evaluation"))
    html = write_report(copy).read_text()
    assert "No evaluation summary" in html and "Dice computed by the report" in html
    meta = _meta(html)
    assert len(meta["viewers"]) == 3
    rows = html.split('id="case-table"')[1]
    assert "0.000" in rows  # the missed lesion


def test_summary_beside_the_predictions_is_found(workdir, tmp_path):
    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy)
    shutil.move(copy / "evaluation", copy / "predictions" / "eval")
    (copy / "predictions" / "eval" / "summary.json").rename(copy / "predictions" / "summary.json")
    html = write_report(copy).read_text()
    assert "No evaluation summary" not in html and len(_meta(html)["viewers"]) == 3


def test_summary_paths_recorded_relative_to_another_folder(workdir, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(workdir, moved)
    # The summary names its files as seen from another current folder, under an old name.
    summary_file = moved / "evaluation" / "summary.json"
    summary_file.write_text(summary_file.read_text().replace(str(workdir), "old_root/wd"))
    assert _locate("old_root/wd/predictions/x.nii.gz", moved) is None
    assert _locate("old_root/wd/Phantoms/dataset.json", moved) == moved / "Phantoms" / "dataset.json"
    html = write_report(moved).read_text()
    assert len(_meta(html)["viewers"]) == 3 and "cannot show" not in html and "not found" not in html


def test_not_a_folder_is_a_user_error(tmp_path):
    with pytest.raises(MedsegError, match="working directory not found"):
        write_report(tmp_path / "absent")


def test_2d_cases_get_one_view(tmp_path):
    ref = np.zeros((20, 24), np.uint8)
    ref[5:12, 6:15] = 1
    pred = np.roll(ref, 1, axis=0)
    from medseg.io.image import Image
    write_image(Image(ref, (0.5, 0.5)), tmp_path / "labels" / "a.nii.gz")
    write_image(Image(pred, (0.5, 0.5)), tmp_path / "pred" / "a.nii.gz")
    evaluate_folders(tmp_path / "pred", tmp_path / "labels", labels={"spot": 1}, out_dir=tmp_path / "evaluation",
                     metrics=["dice"])
    html = write_report(tmp_path).read_text()
    (spec,) = _meta(html)["viewers"]
    assert spec["shape"] == [1, 20, 24] and html.count('class="view"') == 1


# ----------------------------------------------------------------------------- helpers

def test_subsample_indices():
    assert [len(i) for i in subsample_indices((30, 100, 90), 256, 10**6)] == [30, 100, 90]
    idx = subsample_indices((300, 512, 512), 256, 1_000_000)
    sizes = [len(i) for i in idx]
    assert max(sizes) <= 256 and np.prod(sizes) <= 1_000_000
    assert all(i[0] == 0 and i[-1] == n - 1 for i, n in zip(idx, (300, 512, 512)))


def test_worst_and_best_slice():
    ref = np.zeros((5, 10, 10), np.uint8)
    ref[1:4, 2:8, 2:8] = 1
    ref[2, 4:6, 4:6] = 2
    pred = ref.copy()
    pred[3, 2:8, 2:5] = 0
    assert worst_slice(ref, pred) == 3
    assert best_slice(ref, pred) == 2  # the only slice with both classes, and it is right


def test_charts_and_ticks():
    assert nice_ticks(0, 1, 5) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    svg = line_chart([Series("a", [1, 2, 3], [0.5, float("nan"), None], "#000")], title="t")
    assert svg.startswith("<svg") and "<circle" in svg  # one finite point left
    assert "no data" in line_chart([Series("a", [], [], "#000")], title="t")
    one_epoch = line_chart([Series("a", [1], [0.3], "#000")], title="t")
    assert re.findall(r'class="tick">([^<]*)</text>', one_epoch)[-1] == "1"  # no fractional epochs


# ----------------------------------------------------------------------------- in a browser

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")
# Collects uncaught errors and console.error calls from the first script on.
ERROR_HOOK = """
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
window.addEventListener('unhandledrejection', function (e) { window.__errors.push(String(e.reason)); });
var __ce = console.error;
console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, ' ')); __ce.apply(console, arguments); };
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("headless Chromium not found: install the Debian packages 'chromium' and 'chromium-driver'")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium not installed: pip install selenium (the 'browser' test extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_HOOK})
    yield drv
    drv.quit()


def _wait(condition, timeout=15.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def page(browser, report):
    browser.get(report.as_uri())
    first = browser.find_element("css selector", ".viewer")
    browser.execute_script("arguments[0].scrollIntoView()", first)
    _wait(lambda: first.get_attribute("data-ready"), what="the first viewer to unpack")
    assert first.get_attribute("data-ready") == "true", first.text
    return browser


def test_page_loads_without_console_errors(page):
    # Every viewer unpacks when scrolled to.
    for v in page.find_elements("css selector", ".viewer"):
        page.execute_script("arguments[0].scrollIntoView()", v)
        _wait(lambda: v.get_attribute("data-ready"), what="a viewer to unpack")
        assert v.get_attribute("data-ready") == "true"
    assert page.execute_script("return window.__errors") == []
    severe = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def _canvas(page, view):
    return page.execute_script("return arguments[0].querySelector('canvas.slice').toDataURL()", view)


def test_slider_changes_the_shown_slice(page):
    from selenium.webdriver.common.keys import Keys

    view = page.find_element("css selector", ".viewer .view[data-axis='0']")
    slider = view.find_element("css selector", "input[type=range]")
    label = view.find_element("css selector", ".slice-label")
    before = (view.get_attribute("data-slice"), label.text, _canvas(page, view))
    key = Keys.ARROW_LEFT if int(before[0]) > 0 else Keys.ARROW_RIGHT
    slider.send_keys(key, key)
    _wait(lambda: view.get_attribute("data-slice") != before[0], what="the slice to change")
    after = (view.get_attribute("data-slice"), label.text, _canvas(page, view))
    assert abs(int(after[0]) - int(before[0])) == 2
    assert after[1] != before[1] and after[1].startswith(f"z {int(after[0]) + 1} / ")
    assert after[2] != before[2]
    # The other views' crosshair follows the new axial position.
    coronal = page.find_element("css selector", ".viewer .view[data-axis='1']")
    assert coronal.get_attribute("data-slice") is not None


def test_sorting_reorders_rows(page):
    table = page.find_element("id", "case-table")

    def order():
        return [r.find_element("css selector", "td").text for r in table.find_elements("css selector", "tbody tr")]

    initial = order()
    headers = table.find_elements("css selector", "thead th")
    case_header = headers[0]
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", table)
    case_header.click()
    assert order() == sorted(initial) and case_header.get_attribute("aria-sort") == "ascending"
    case_header.click()
    assert order() == sorted(initial, reverse=True)
    dice_header = headers[1]
    dice_header.click()
    values = [float(r.find_elements("css selector", "td")[1].get_attribute("data-sort"))
              for r in table.find_elements("css selector", "tbody tr")]
    assert values == sorted(values) and order() == initial


def test_screenshot(page, tmp_path):
    path = tmp_path / "report.png"
    assert page.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
