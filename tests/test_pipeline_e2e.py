"""End to end: the real `dvc repro`, `dvc exp run -S` and `dvc metrics diff` in a temporary git
repository, on a tiny generated archive in the official binary format served over real HTTP from
127.0.0.1, so the real download code runs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import cv2
import pytest
import readme_commands
from cifar_archives import write_binary_archive, write_imagefolder_archive
from dvc_project import dvc, edit_params, make_project, ran_stages, run
from httpserver import LocalServer

from cnnlab.evaluate.record import MetricsRecord

STUDY000 = ("ann", "cnn", "cnn_aug")
# test_full_pipeline_e2e.py runs every stage; these tests stay on the CIFAR-10 branch.
STUDY000_TARGETS = [f"evaluate@{exp}" for exp in STUDY000]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    archive = tmp_path_factory.mktemp("mirror") / "cifar-10-binary.tar.gz"
    write_binary_archive(archive, records_per_batch=40)
    with LocalServer({"cifar-10-binary.tar.gz": archive.read_bytes()}) as srv:
        srv.md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        yield srv


def tiny_cifar(server: LocalServer):
    def change(params):
        params["data"]["cifar10"] = {"url": server.url("cifar-10-binary.tar.gz"), "md5": server.md5}
        for name, exp in params["experiments"].items():
            # ann keeps log_every 100: a run shorter than one logging interval must work too.
            exp.update(epochs=1, batch_size=32, log_every=100 if name == "ann" else 2)
    return change


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, server):
    root = tmp_path_factory.mktemp("project")
    env = make_project(root, tiny_cifar(server))
    result = dvc(root, env, "repro", *STUDY000_TARGETS)
    return root, env, result


def test_repro_runs_every_stage_and_writes_the_contracts(reproduced, server):
    root, env, result = reproduced
    assert ran_stages(result.stdout) == {"download_cifar10", "prepare_cifar10",
                                         *(f"train@{e}" for e in STUDY000),
                                         *(f"evaluate@{e}" for e in STUDY000)}
    assert server.count("cifar-10-binary.tar.gz") >= 1
    meta = json.loads((root / "data/prepared/cifar10/meta.json").read_text())
    assert meta["splits"] == {"train": 200, "test": 40}
    for exp in STUDY000:
        record = MetricsRecord.read(root / f"metrics/{exp}.json", exp)
        assert (record.epochs, record.train_images, record.eval_images) == (1, 200, 40)
        assert list(record.per_class) == sorted(meta["classes"])
        provenance = json.loads((root / f"metrics/{exp}/eval/provenance.json").read_text())
        head = run(["git", "rev-parse", "HEAD"], root, env).stdout.strip()
        assert provenance["git_rev"] == head and provenance["device"].startswith("cpu")
        assert (provenance["dataset"], provenance["eval_split"]) == ("cifar10", "test")
        assert (root / f"data/models/{exp}/final.pt").is_file()
        loss = (root / f"metrics/{exp}/train/plots/metrics/loss.tsv").read_text().splitlines()
        records = 0 if exp == "ann" else 7 // 2  # ann's 7 steps never reach log_every=100
        assert loss[0].split("\t") == ["step", "loss"] and len(loss) == 1 + records
        predictions = (root / f"metrics/{exp}/eval/predictions.csv").read_text().splitlines()
        assert predictions[0] == "index,actual,predicted,confidence" and len(predictions) == 41
        report = (root / f"metrics/{exp}/eval/classification_report.csv").read_text().splitlines()
        assert report[0] == "class,precision,recall,f1,support" and len(report) == 1 + 10 + 2


def test_plots_show_draws_the_confusion_matrix_and_loss(reproduced, tmp_path):
    """`dvc plots show` and `dvc plots diff` write a self-contained page (.dvc/plots/offline.html:
    vega, vega-lite and vega-embed inlined) that headless Chromium draws with no network at all:
    one Vega view per plot, confusion matrices as such, the training series as lines (a point per
    epoch on the per-epoch ones), study 000's experiments compared on the top-level plots.
    tests/test_dvc_plots.py reads back what Vega draws for every study."""
    root, env, _ = reproduced
    dvc(root, env, "plots", "show", "-o", str(tmp_path / "plots"))
    page_file = tmp_path / "plots" / "index.html"
    page = page_file.read_text()
    for exp in STUDY000:
        assert f"#metrics_{exp}_eval_predictions_csv" in page  # the confusion matrix
        if exp != "ann":  # ann's run is shorter than one logging interval
            assert f"#metrics_{exp}_train_plots_metrics_loss_tsv" in page
        assert f"#metrics_{exp}_train_plots_metrics_epoch_train_accuracy_tsv" in page

    # Every URL the page may hold, and why none is ever fetched: XML namespace names in vega's SVG
    # code; the "$schema" ids of the specs (dvc-render's templates, vega-lite's compiled output),
    # which vega-embed only reads a version from; vega-embed's default Vega Editor address, used by
    # its "Open in Vega Editor" action only, which the template turns off; the "http://" and
    # "https://" prefixes vegaEmbed checks a string argument against; an issue link in a vega-lite
    # warning text; the JSON-Patch license comment inside vega-embed.
    harmless_urls = {
        "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink",
        "http://www.w3.org/2000/xmlns/",
        "https://vega.github.io/schema/vega-lite/v5.json",
        "https://vega.github.io/schema/vega/v5.json",
        "https://vega.github.io/editor/", "http://", "https://",
        "https://github.com/vega/vega-lite/issues/2415",
        "https://github.com/Starcounter-Jack/JSON-Patch",
    }

    def assert_self_contained(html: str) -> None:
        class Attributes(HTMLParser):  # <script> and <style> bodies are text, not tags, to it
            def __init__(self):
                super().__init__()
                self.found: list[tuple[str, str, str]] = []

            def handle_starttag(self, tag, attrs):
                self.found += [(tag, name, value or "") for name, value in attrs]

        parser = Attributes()
        parser.feed(html)
        remote = re.compile(r"\s*(?:[a-z][a-z0-9+.-]*:)?//", re.I)  # http:, https:, or //host
        loads = [a for a in parser.found if a[1] in {"src", "href", "srcset", "data", "action"}]
        assert not [a for a in loads if remote.match(a[2])], loads
        assert ("script", "src") not in {a[:2] for a in parser.found}  # every script is inline
        assert not re.search(r"""(?:\bimport\s*\(?|\bfrom|\bfetch\s*\(|importScripts\s*\(|"""
                             r"""@import|url\()\s*["'`]?(?:https?:)?//""", html)
        assert set(re.findall(r"""https?://[^\s"'`<>()\\]*""", html)) <= harmless_urls

    assert_self_contained(page)
    # The page is the project's template (no CDN <script> tags: it has no {scripts} placeholder).
    template = (root / ".dvc" / "plots" / "offline.html").read_text()
    assert page.startswith(template.split("<body>")[0].replace("{refresh_tag}", ""))

    # The plots, from the specs dvc-render wrote into the page.
    specs = {m[1]: json.loads(m[2]) for m in re.finditer(
        r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*var spec = (.*?);\s*'
        r"vegaEmbed\('#\1', spec\);", page, re.S)}
    assert len(specs) == page.count("vegaEmbed(")
    # Drawn: every series these trainings logged, each confusion matrix and study 000's three
    # comparisons. ann's loss and lr (a header alone: too short a run) and the plots of the other
    # studies, whose files this run does not make, get an empty spec, an empty view.
    series = [path.relative_to(root).as_posix() for exp in STUDY000
              for path in (root / f"metrics/{exp}/train/plots/metrics").rglob("*.tsv")
              if len(path.read_text().splitlines()) > 1]
    confusions = [f"metrics/{exp}/eval/predictions.csv" for exp in STUDY000]
    comparisons = {"study000_loss", "study000_test_accuracy", "study000_lr"}
    drawn = {re.sub(r"[/.]", "_", path) for path in series + confusions} | comparisons
    assert {plot_id for plot_id, spec in specs.items() if spec} == drawn
    assert sum(i.endswith("_metrics_loss_tsv") for i in drawn) == 2  # not ann: too short a run

    def marks(node) -> list[dict]:
        if isinstance(node, list):
            return [m for item in node for m in marks(item)]
        if not isinstance(node, dict):
            return []
        own = node.get("mark")
        own = [{"type": own} if isinstance(own, str) else own] if own else []
        return own + [m for key, value in node.items() if key != "mark" for m in marks(value)]

    for plot_id in drawn:
        types = [m["type"] for m in marks(specs[plot_id])]
        if plot_id.endswith("_eval_predictions_csv"):
            assert "rect" in types and "line" not in types, plot_id  # dvc's confusion template
        else:  # .dvc/plots/{steps,epochs,compare_steps,compare_epochs}.json
            lines = [m for m in marks(specs[plot_id]) if m["type"] == "line"]
            assert lines and all(m.get("interpolate") == "linear" for m in lines), plot_id
            per_epoch = "_epoch_" in plot_id or plot_id == "study000_test_accuracy"
            assert all(bool(m.get("point")) == per_epoch for m in lines), plot_id

    # `dvc plots diff` fills the same page.
    dvc(root, env, "plots", "diff", "-o", str(tmp_path / "diff"))
    diff_page = (tmp_path / "diff" / "index.html").read_text()
    assert_self_contained(diff_page)
    assert "vegaEmbed('#metrics_cnn_train_plots_metrics_loss_tsv'" in diff_page

    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium in CI: .ci/run installs Debian's chromium package")
        pytest.skip("no `chromium` binary to render the plots page (apt-get install chromium)")

    def headless(name: str, *args: str) -> subprocess.CompletedProcess:
        # No host name resolves, so the page renders from what it holds or not at all.
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp_path / f'chromium-{name}'}",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000",
               "--hide-scrollbars", *args, page_file.as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)

    dom = headless("dom", "--dump-dom").stdout
    views = [(int(w), int(h)) for w, h in re.findall(
        r'<canvas width="(\d+)" height="(\d+)" class="marks"', dom)]
    assert len(views) == len(specs), f"{len(views)} Vega views for {len(specs)} plots"
    assert sum(w > 0 and h > 0 for w, h in views) == len(drawn), views

    # Tall enough for the whole page; a blank band at the bottom shows nothing was cut off.
    shot = tmp_path / "plots.png"
    headless("shot", f"--screenshot={shot}", f"--window-size=1100,{400 * len(specs)}")
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (400 * len(specs), 1100)
    inked_rows = (image < 230).any(axis=2).any(axis=1).nonzero()[0]
    assert len(inked_rows) and inked_rows[-1] < image.shape[0] - 200
    page_area = image[: inked_rows[-1] + 1]
    inked = (page_area < 230).any(axis=2).mean()  # axes, text, marks
    hsv = cv2.cvtColor(page_area, cv2.COLOR_BGR2HSV)
    colored = ((hsv[..., 1] > 80) & (hsv[..., 2] > 60)).mean()  # matrix cells, series lines
    assert inked > 0.05 and colored > 0.02, (inked, colored)


def test_same_params_give_a_bit_identical_metrics_file(reproduced):
    """Training and evaluation forced to run again give the same bytes in metrics/<exp>.json on
    the CPU: cnn_aug draws random crops and flips, so every seeded stream is exercised. Timings,
    which differ, are kept in the train summary only."""
    root, env, _ = reproduced
    exp = "cnn_aug"
    before = (root / f"metrics/{exp}.json").read_bytes()
    summary_before = json.loads((root / f"metrics/{exp}/train/metrics.json").read_text())
    dvc(root, env, "repro", "-f", "-s", f"train@{exp}")
    dvc(root, env, "repro", "-f", "-s", f"evaluate@{exp}")
    assert (root / f"metrics/{exp}.json").read_bytes() == before
    summary_after = json.loads((root / f"metrics/{exp}/train/metrics.json").read_text())
    assert summary_after["train_loss"] == summary_before["train_loss"]
    assert "train_seconds" in summary_after and "train_seconds" not in json.loads(before)
    status = dvc(root, env, "status", f"evaluate@{exp}").stdout
    assert "up to date" in status and "changed" not in status


def test_exp_show_holds_the_metrics_records_and_nothing_else(reproduced):
    """`dvc exp show` of the trio: three records of 20 numbers (4 scores, 10 classes, 6 counts),
    no column from the train summaries or the provenance, and no string among the metrics."""
    root, env, _ = reproduced
    header, workspace = list(csv.reader(io.StringIO(
        dvc(root, env, "exp", "show", "--csv").stdout)))[:2]
    # Metric columns are "<file>:<key>"; the other columns are params and deps' hashes.
    metrics = {name: value for name, value in zip(header, workspace, strict=True)
               if name.startswith("metrics/") and ":" in name}
    assert {name.split(":")[0] for name in metrics} == {f"metrics/{e}.json" for e in STUDY000}
    assert len(metrics) == 3 * 20, sorted(metrics)
    for value in metrics.values():
        float(value)  # a number, never a name, a version or a revision


def test_exp_run_reruns_only_the_changed_experiment_and_metrics_diff_shows_it(reproduced):
    root, env, _ = reproduced
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline results"], root, env)
    result = dvc(root, env, "exp", "run", "-S", "experiments.cnn.optimizer.lr=0.01",
                 *STUDY000_TARGETS)
    assert ran_stages(result.stdout) == {"train@cnn", "evaluate@cnn"}

    diff = json.loads(dvc(root, env, "metrics", "diff", "--json").stdout)
    assert set(diff) == {"metrics/cnn.json"}  # the train summary is no metric: see below
    assert "params" not in diff["metrics/cnn.json"]  # same model, other optimizer settings
    assert all(change["diff"] != 0 for change in diff["metrics/cnn.json"].values())
    shown = dvc(root, env, "exp", "show", "--csv").stdout
    assert "experiments.cnn.optimizer.lr" in shown


def test_bad_md5_fails_the_stage_in_one_line_and_leaves_nothing(tmp_path, server):
    env = make_project(tmp_path, tiny_cifar(server))
    edit_params(tmp_path, lambda p: p["data"]["cifar10"].update(md5="0" * 32))
    result = dvc(tmp_path, env, "repro", "download_cifar10", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: md5 mismatch")]
    assert len(errors) == 1 and server.md5 in errors[0]
    assert list((tmp_path / "data").glob("raw/*")) == []


def test_metrics_diff_of_identical_runs_at_two_commits_is_empty(reproduced):
    """The same params run again at a later commit: the provenance names the new commit and the
    train summary its new timings, yet `dvc metrics diff` between the commits shows nothing."""
    root, env, _ = reproduced
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "results", "--allow-empty"], root, env)
    (root / "NOTES.md").write_text("A commit that changes no code and no params.\n")
    run(["git", "add", "NOTES.md"], root, env)
    run(["git", "commit", "-qm", "notes"], root, env)
    dvc(root, env, "repro", "-f", "-s", "train@ann")
    dvc(root, env, "repro", "-f", "-s", "evaluate@ann")
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "the same run again"], root, env)

    changed = run(["git", "diff", "--name-only", "HEAD~2", "HEAD"], root, env).stdout.split()
    assert {"metrics/ann/eval/provenance.json", "metrics/ann/train/metrics.json"} <= set(changed)
    assert "metrics/ann.json" not in changed
    provenance = json.loads((root / "metrics/ann/eval/provenance.json").read_text())
    assert provenance["git_rev"] == run(["git", "rev-parse", "HEAD~1"], root, env).stdout.strip()
    diff = dvc(root, env, "metrics", "diff", "--json", "HEAD~2", "HEAD").stdout
    assert json.loads(diff) == {}
    assert dvc(root, env, "metrics", "diff", "HEAD~2", "HEAD").stdout.strip() == ""


# ----------------------------------------------------- the README's commands, as a user types them


def test_the_readmes_everyday_commands_run_as_written(reproduced):
    """README "Everyday use": one experiment, a variant, exp show, metrics diff, plots show."""
    root, env, _ = reproduced
    commands = readme_commands.block("dvc repro evaluate@cnn")
    results = readme_commands.run_block(commands, root, env)
    by_command = dict(zip(commands, results, strict=True))
    variant = next(r for c, r in by_command.items() if c.startswith("dvc exp run"))
    assert ran_stages(variant.stdout) == {"train@cnn", "evaluate@cnn"}
    show = next(r for c, r in by_command.items() if c.startswith("dvc exp show"))
    assert "lr" in show.stdout and "accuracy" in show.stdout
    assert (root / "dvc_plots" / "index.html").is_file()


def test_the_readmes_offline_cifar_command_runs_as_written(reproduced, tmp_path):
    """README "Offline sources": a local CIFAR-10 archive in ImageFolder layout (JPEG), only its
    /data/ folder and md5 filled in."""
    root, env, _ = reproduced
    archive = tmp_path / "data" / "cifar10-jpeg.tar.gz"
    archive.parent.mkdir()
    write_imagefolder_archive(archive, per_class={"train": 8, "test": 4}, ext="jpg")
    replace = {"/data/": f"{archive.parent}/",
               "<its md5>": hashlib.md5(archive.read_bytes()).hexdigest()}
    (result,) = readme_commands.run_block(
        readme_commands.block("dvc exp run -S data.cifar10.url=/data/cifar10-jpeg.tar.gz"),
        root, env, replace)
    assert {"download_cifar10", "prepare_cifar10", "evaluate@cnn"} <= ran_stages(result.stdout)
    meta = json.loads((root / "data/prepared/cifar10/meta.json").read_text())
    assert meta["splits"] == {"train": 80, "test": 40}
