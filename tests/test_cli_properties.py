"""Issue 18, item 7: generated manifests, argument lists and card edits thrown at the CLI (in-process) end with
exit status 0 or 2 and never a traceback. Small example counts keep it to a few seconds each; every output
path stays inside a temporary folder."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from core.models.bundle import CARD_FILE, ModelCard  # noqa: E402
from core.cli import main  # noqa: E402
from tests.helpers import make_image_folder, make_tiny_bundle  # noqa: E402

QUICK = settings(max_examples=8, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ARGS = settings(QUICK, max_examples=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("props")
    bundle = make_tiny_bundle(root / "models" / "alpha", name="alpha")
    photos = make_image_folder(root / "photos", n_per_class=1, size=(32, 32))
    return {"root": root, "bundle": bundle, "photos": photos}


def run(argv: list[str]) -> tuple[int, str]:
    """core.cli.main in-process; argparse's own refusals (SystemExit 2) count as exit 2."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    text = err.getvalue()
    assert code in (0, 2), (argv, code, text)
    assert "Traceback" not in text, (argv, text)
    return code, text


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
cells = st.one_of(texts, st.integers(-5, 10**12), st.floats(allow_nan=True), st.none(),
                  st.lists(texts, max_size=2), st.binary(max_size=8))


@QUICK
@given(values=st.lists(cells, min_size=0, max_size=5), header=st.sampled_from(["path", "file", "path,extra"]))
def test_generated_csv_manifests_never_crash(world, values, header):
    with tempfile.TemporaryDirectory(dir=world["root"]) as tmp:
        manifest = Path(tmp) / "m.csv"
        lines = [header] + [str(v).replace("\n", " ").replace("\r", " ") if not isinstance(v, str) else
                            '"' + v.replace('"', '""') + '"' for v in values]
        lines.insert(1, str(world["photos"] / "mpox" / "mpox_00.jpg"))
        manifest.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
        run(["classify", str(manifest), "--model", str(world["bundle"]), "--quiet", "--csv", str(Path(tmp) / "o.csv")])


@QUICK
@given(values=st.lists(cells, min_size=1, max_size=4))
def test_generated_parquet_manifests_never_crash(world, values):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(dir=world["root"]) as tmp:
        manifest = Path(tmp) / "m.parquet"
        try:
            table = pa.table({"path": values})
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            table = pa.table({"path": [repr(v) for v in values]})
        pq.write_table(table, manifest)
        run(["classify", str(manifest), "--model", str(world["bundle"]), "--quiet"])


OPTIONS = {
    "classify": ["--threshold", "--batch-size", "--csv", "--report", "--summary", "--model", "--session", "--resume",
                 "--engine", "--actors", "--parquet"],
    "evaluate": ["--threshold", "--split", "--json", "--bootstrap", "--model", "--batch-size"],
    "models": ["--models-dir"],
    "adapt": ["--suggest", "--pool", "--json", "--out", "--session", "--model"],
}


@st.composite
def argument_lists(draw, world):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    tmp = world["root"] / "out"
    values = st.one_of(texts.filter(lambda t: not t.startswith("-")), st.integers(-3, 100).map(str),
                       st.floats(-1, 2).map(str), st.just(str(world["bundle"])), st.just(str(world["photos"])),
                       st.just(str(tmp / "x.csv")), st.just(str(world["bundle"] / CARD_FILE)), st.just("/dev/null"),
                       st.just(str(world["photos"] / "mpox")), st.just("local"), st.just("ray"))
    argv = [command]
    if command in ("classify", "evaluate"):
        argv.append(draw(st.sampled_from([str(world["photos"]), str(world["root"] / "nope"), str(tmp / "x.csv")])))
    for option in draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=4)):
        argv.append(option)
        if option not in ("--resume",):
            value = draw(values)
            if option == "--engine" and value == "ray":
                value = "local"   # starting Ray per example is too slow; the Ray path has its own tests
            if option == "--model" and value not in (str(world["bundle"]),):
                value = draw(st.sampled_from([str(world["bundle"]), "nosuch", value]))
            argv.append(value)
    if command == "classify" and "--model" not in argv:
        argv += ["--model", str(world["bundle"])]
    if command == "evaluate":
        argv += ["--bootstrap", "0"] if "--bootstrap" not in argv else []
    return argv + ["--quiet"] if command != "models" else argv


@ARGS
@given(data=st.data())
def test_generated_argument_lists_never_crash(world, data):
    (world["root"] / "out").mkdir(exist_ok=True)
    before = (world["bundle"] / CARD_FILE).read_bytes()
    argv = data.draw(argument_lists(world))
    run(argv)
    assert (world["bundle"] / CARD_FILE).read_bytes() == before


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                                     texts),
                           lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
                           max_leaves=6)
FIELDS = ["name", "version", "architecture", "input_size", "format_version", "threshold", "temperature",
          "uncertain_band", "ood_threshold", "class_names", "metrics", "extra", "parent", "intended_use",
          "limitations", "files", "training_data"]


@QUICK
@given(edits=st.dictionaries(st.sampled_from(FIELDS), json_values, min_size=1, max_size=3),
       extra_key=st.sampled_from(["runtime", "components", "operating_points", "kind", "anything"]),
       extra_value=json_values)
def test_generated_card_edits_never_crash_models_or_classify(world, edits, extra_key, extra_value):
    with tempfile.TemporaryDirectory(dir=world["root"]) as tmp:
        models = Path(tmp) / "models"
        shutil.copytree(world["bundle"].parent, models)
        card_path = models / "alpha" / CARD_FILE
        data = json.loads(card_path.read_text())
        data.update(edits)
        if isinstance(data.get("extra"), dict):
            data["extra"][extra_key] = extra_value
        try:
            data["card_sha256"] = ModelCard.from_dict(dict(data)).content_digest()   # re-sealed, as a user could
        except Exception:  # noqa: BLE001 - a card too broken to seal is still a card to refuse
            pass
        card_path.write_text(json.dumps(data))
        run(["models", "--models-dir", str(models)])
        run(["classify", str(world["photos"]), "--model", str(models / "alpha"), "--quiet",
             "--csv", str(Path(tmp) / "o.csv")])


# -- issue 25: card bytes, stored verdicts and ood.npz, generated ----------------------------------------------------

@QUICK
@given(cut=st.integers(0, 4000), junk=st.binary(min_size=1, max_size=6), depth=st.integers(0, 200),
       wrap=st.sampled_from(["[", "{\"k\":", "[{\"a\":"]))
def test_generated_card_bytes_never_crash_models_or_classify(world, cut, junk, depth, wrap):
    """Bytes spliced into a card (any bytes: not UTF-8, unbalanced, deeply nested) are one warning or one error."""
    with tempfile.TemporaryDirectory(dir=world["root"]) as tmp:
        models = Path(tmp) / "models"
        shutil.copytree(world["bundle"].parent, models)
        card_path = models / "alpha" / CARD_FILE
        raw = card_path.read_bytes()
        cut = min(cut, len(raw))
        card_path.write_bytes(raw[:cut] + junk + (wrap.encode() * depth) + raw[cut:])
        run(["models", "--models-dir", str(models)])   # skipped with a warning, or listed as refused
        code, text = run(["classify", str(world["photos"]), "--model", str(models / "alpha"), "--quiet"])
        errors = [line for line in text.strip().splitlines() if not line.startswith("warning: ")]
        assert code == 2 and len(errors) == 1, text   # never a changed card used: its digest no longer matches


finite_or_not = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**400, 10**400), texts,
                          st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
VERDICT_KEYS = ["detected", "p_value", "statistic", "min_effect", "alpha", "n", "review_n", "method", "reason",
                "model", "model_key", "message", "remedy", "operating_point", "point_message", "anything"]


@settings(QUICK, max_examples=200)
@given(verdict=st.dictionaries(st.sampled_from(VERDICT_KEYS), finite_or_not, max_size=10))
def test_generated_audit_row_verdicts_are_typed_or_refused(verdict):
    import math

    from core.triage.shift import clean_verdict

    clean = clean_verdict(verdict)
    if clean is None:
        return
    assert isinstance(clean["detected"], bool)
    p = clean.get("p_value")
    assert p is None or (isinstance(p, float) and 0.0 <= p <= 1.0)
    assert not clean["detected"] or p is not None
    for key in ("statistic", "min_effect"):
        assert clean.get(key) is None or (isinstance(clean[key], float) and math.isfinite(clean[key]))
    for key in ("n", "review_n"):
        assert key not in clean or (type(clean[key]) is int and clean[key] >= 0)
    for key in ("method", "reason", "model", "message", "remedy"):
        assert key not in clean or isinstance(clean[key], str)
    assert clean.get("operating_point", "default") in ("default", "out_of_collection")
    json.dumps(clean, allow_nan=False)  # what is kept can be stored and shown


@QUICK
@given(verdict=st.dictionaries(st.sampled_from(VERDICT_KEYS), finite_or_not, max_size=8))
def test_generated_verdicts_never_crash_the_pdf_cover(world, verdict):
    from reportlab.platypus import SimpleDocTemplate

    from core.reports.cover import _shift_paragraphs

    with tempfile.TemporaryDirectory(dir=world["root"]) as tmp:
        SimpleDocTemplate(str(Path(tmp) / "c.pdf")).build(_shift_paragraphs(verdict) or [])


ood_values = st.sampled_from([0.0, -1.0, 1.0, 1e-300, 1e300, float("nan"), float("inf"), -float("inf")])


@QUICK
@given(which=st.sampled_from(["mean", "components", "scales", "residual_scale"]), value=ood_values,
       index=st.integers(0, 3), shape_change=st.booleans())
def test_generated_ood_files_never_crash_classify_and_never_warn(world, which, value, index, shape_change):
    import warnings

    import numpy as np

    from core.models.bundle import OOD_FILE, read_card, write_card

    with tempfile.TemporaryDirectory(dir=world["root"]) as tmp:
        models = Path(tmp) / "models"
        shutil.copytree(world["bundle"].parent, models)
        folder = models / "alpha"
        with np.load(folder / OOD_FILE) as data:
            arrays = {k: data[k].astype(np.float64) for k in data.files}
        target = arrays[which]
        if target.ndim == 0:
            arrays[which] = np.float64(value)
        else:
            flat = target.reshape(-1)
            flat[index % flat.size] = value
            arrays[which] = flat.reshape(target.shape)[..., :-1] if shape_change else flat.reshape(target.shape)
        np.savez(folder / OOD_FILE, **arrays)
        write_card(folder, read_card(folder))   # re-sealed, as the bundle's owner could
        with warnings.catch_warnings():
            warnings.simplefilter("error")      # a library warning that reached the user would fail here
            code, text = run(["classify", str(world["photos"]), "--model", str(folder), "--quiet",
                              "--csv", str(Path(tmp) / "o.csv")])
        assert code == 0 or len(text.strip().splitlines()) == 1, text
