"""End-to-end tests of the `mrisr` command: real files, real subprocesses, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk


def mrisr(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrisr.cli", *args], capture_output=True, encoding="utf-8", errors="replace", cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def thick_volume(tmp_path_factory) -> Path:
    """A 1×1×4 mm thick-slice cut of the MNI152 template (cropped for speed)."""
    from mrisr.simulation.template import mni_image

    folder = tmp_path_factory.mktemp("cli")
    hr = mni_image("t1")[40:160, 40:180, 40:160]
    sitk.WriteImage(hr, str(folder / "hr.nii.gz"))
    return folder / "hr.nii.gz"


def test_degrade_enhance_evaluate_chain(tmp_path, thick_volume):
    lr, out, report = tmp_path / "lr.nii.gz", tmp_path / "out.nii.gz", tmp_path / "scores.json"
    r = mrisr("--progress", "none", "degrade", str(thick_volume), str(lr), "--thickness", "4", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert sitk.ReadImage(str(lr)).GetSpacing() == pytest.approx((1.0, 1.0, 4.0))
    r = mrisr("--progress", "json", "enhance", str(lr), str(out), "--method", "bspline")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert {"load", "interpolate", "save"} <= {e["stage"] for e in events}
    enhanced = sitk.ReadImage(str(out))
    assert enhanced.GetSize() == sitk.ReadImage(str(thick_volume)).GetSize()
    r = mrisr("evaluate", str(out), str(thick_volume), "--input", str(lr), "--json", str(report))
    assert r.returncode == 0, r.stderr
    scores = json.loads(report.read_text())
    assert 25 < scores["psnr"] < 45 and 0.7 < scores["ssim"] <= 1.0 and scores["consistency"] > 30
    assert "psnr" in r.stdout and "out.nii.gz" in r.stdout


def test_methods_lists_the_registry_as_json():
    r = mrisr("methods", "--json")
    assert r.returncode == 0
    data = json.loads(r.stdout)
    assert data["default_method"] in {m["name"] for m in data["methods"]}


@pytest.mark.parametrize(
    "args, message",
    [
        (["enhance", "{missing}", "{out}"], "does not exist"),
        (["enhance", "{bad}", "{out}"], "cannot read"),
        (["enhance", "{input}", "{out}", "--method", "magic"], "unknown method"),
        (["enhance", "{input}", "{out}", "--target-spacing", "0", "1", "1"], "target spacing"),
        (["enhance", "{input}", "{out}", "--target-spacing", "0.05", "0.05", "0.05", "--max-voxels", "1000000"], "budget"),
        (["enhance", "{input}", "{out}", "--device", "cuda"], "CUDA"),
        (["enhance", "{input}", "{out}", "--method", "bspline", "--steps", "5"], "no --steps"),
        (["enhance", "{input}", "{input}"], "input file"),
        (["enhance", "{input}", "{tmp}/nofolder/out.nii.gz"], "does not exist"),
        (["degrade", "{input}", "{out}", "--thickness", "-3"], "slice_thickness"),
        (["enhance", "{input}", "{out}", "--reference-seg", "{labels}"], "needs --segment"),
        (["segment", "{input}", "{out}", "--reference-seg", "{input}"], "label map"),
        (["segment", "{input}", "{out}", "--reference-seg", "{small_labels}"], "grid"),
        (["segment", "{input}", "{input}"], "input file"),
    ],
)
def test_bad_input_gives_one_line_and_no_output(tmp_path, args, message):
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 100, (6, 20, 20)).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 5.0))
    source = tmp_path / "in.nii.gz"
    sitk.WriteImage(image, str(source))
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    labels = sitk.GetImageFromArray(np.ones((6, 20, 20), np.uint8))
    labels.CopyInformation(image)
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    sitk.WriteImage(labels[:, :, :4], str(tmp_path / "small_labels.nii.gz"))
    names = {"missing": tmp_path / "missing.nii.gz", "bad": tmp_path / "bad.nii.gz", "input": source,
             "out": tmp_path / "out.nii.gz", "tmp": tmp_path, "labels": tmp_path / "labels.nii.gz",
             "small_labels": tmp_path / "small_labels.nii.gz"}
    before = sorted(p.name for p in tmp_path.iterdir())
    r = mrisr(*[a.format(**names) for a in args])
    if message == "CUDA" and r.returncode == 0:
        pytest.skip("CUDA is available here")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mrisr: error:") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_segment_with_the_gmm_fallback_and_a_reference(tmp_path, thick_volume):
    """`mrisr segment` writes a Slicer .seg.nrrd and scores it against a reference label map."""
    from mrisr.segmentation.tissues import template_labels

    reference = sitk.GetImageFromArray(template_labels()[40:160, 40:180, 40:160])
    reference.CopyInformation(sitk.ReadImage(str(thick_volume)))
    sitk.WriteImage(reference, str(tmp_path / "reference.nii.gz"))
    out, report = tmp_path / "tissues.seg.nrrd", tmp_path / "tissues.json"
    r = mrisr("segment", str(thick_volume), str(out), "--segmenter", "gmm", "--reference-seg",
              str(tmp_path / "reference.nii.gz"), "--json", str(report))
    assert r.returncode == 0, r.stderr
    assert "Grey matter" in r.stdout and "dice" in r.stdout
    rows = {row["label"]: row for row in json.loads(report.read_text())["segmentation_vs_reference"]}
    assert rows["White matter"]["dice"] > 0.75 and rows["Grey matter"]["dice"] > 0.6, rows
    assert sitk.ReadImage(str(out)).GetMetaData("Segment1_Name") == "Grey matter"


def test_enhance_segment_writes_both_segmentations_and_their_agreement(tmp_path, thick_volume):
    """The input's segmentation is made from the interpolated input that --write-interpolated writes (the
    image the Slicer module shows as the input), and a different enhancement segments differently."""
    lr, out, interpolated = tmp_path / "lr.nii.gz", tmp_path / "up.nii.gz", tmp_path / "interpolated.nii.gz"
    assert mrisr("degrade", str(thick_volume), str(lr), "--thickness", "5", "--seed", "1").returncode == 0
    r = mrisr("enhance", str(lr), str(out), "--method", "linear", "--segment",
              "--segmenter", "gmm", "--write-interpolated", str(interpolated))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "up_tissues.json").read_text())
    up = sitk.ReadImage(str(out))
    for name in ("up_input.seg.nrrd", "up.seg.nrrd"):
        labels = sitk.ReadImage(str(tmp_path / name))
        assert labels.GetSize() == up.GetSize() and labels.GetSpacing() == pytest.approx(up.GetSpacing())
    again = tmp_path / "again.nii.gz"
    assert mrisr("segment", str(interpolated), str(again), "--segmenter", "gmm").returncode == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(again))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "up_input.seg.nrrd"))))
    dice = {row["label"]: row["dice"] for row in report["input_vs_output"]}
    assert 0.8 < dice["Grey matter"] < 0.995 and 0.8 < dice["White matter"] < 0.995, dice  # linear ≠ B-spline
    assert report["input_vs_output"][2]["output_ml"] > 50  # white matter of the 120 x 140 x 120 mm crop


def test_bench_quality_on_a_crop_writes_metrics_for_truth_and_methods(tmp_path):
    out = tmp_path / "q.json"
    run = mrisr("--progress", "none", "bench", "quality", "--crop", "40", "--cases", "x4_lowfield", "--no-lpips",
                "--methods", "nearest", "bspline", "--out", str(out))
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["results"]["x4_lowfield"]
    truth, nearest, bspline = rows["(ground truth)"], rows["nearest"], rows["bspline"]
    assert 20 < truth["consistency"] < 40 and 20 < truth["consistency_head"] < 40  # low-field contrast + noise
    assert bspline["psnr"] > nearest["psnr"] + 0.5 and bspline["gmsd"] < nearest["gmsd"]
    # interpolation keeps the LR's contrast and noise, so it is far more consistent with the LR than the truth
    assert bspline["consistency_head"] > truth["consistency_head"] + 3
    assert bspline["volumes"] == 1


def _thick_mni_crop(folder: Path, snr: str) -> sitk.Image:
    """A 48×64×40 mm cut of the MNI template as hr.nii.gz and its 4 mm slices (`mrisr degrade`) as lr.nii.gz."""
    from mrisr.simulation.template import mni_image

    hr = mni_image("t1")[60:108, 70:134, 40:80]
    sitk.WriteImage(hr, str(folder / "hr.nii.gz"))
    assert mrisr("degrade", str(folder / "hr.nii.gz"), str(folder / "lr.nii.gz"), "--thickness", "4",
                 "--snr", snr).returncode == 0
    return hr


def test_enhance_with_samples_writes_the_mean_and_the_uncertainty_map(tmp_path):
    hr = _thick_mni_crop(tmp_path, "20")
    lr, out, sd = (str(tmp_path / n) for n in ("lr.nii.gz", "out.nii.gz", "sd.nii.gz"))
    refused = mrisr("enhance", lr, out, "--method", "ressrdiff", "--steps", "1", "--uncertainty", sd)
    assert refused.returncode == 2 and "needs several samples" in refused.stderr
    refused = mrisr("enhance", lr, out, "--method", "bspline", "--samples", "3")
    assert refused.returncode == 2 and "deterministic" in refused.stderr
    assert not Path(out).exists() and not Path(sd).exists()
    run = mrisr("--progress", "none", "enhance", lr, out, "--method", "ressrdiff", "--steps", "1", "--samples", "2",
                "--uncertainty", sd, "--target-spacing", "1", "1", "1")
    assert run.returncode == 0, run.stderr
    assert "2 samples averaged" in run.stdout
    mean, spread = sitk.ReadImage(out), sitk.ReadImage(sd)
    assert mean.GetSize() == spread.GetSize() == hr.GetSize()
    head = sitk.GetArrayFromImage(hr) > 0.2 * float(sitk.GetArrayFromImage(hr).max())
    spread_head = sitk.GetArrayFromImage(spread)[head]
    assert spread_head.min() >= 0 and 0 < np.median(spread_head) < 0.2 * float(sitk.GetArrayFromImage(mean)[head].mean())


def test_enhance_with_back_projection_agrees_with_the_acquired_slices(tmp_path):
    from mrisr.evaluation.metrics import consistency

    _thick_mni_crop(tmp_path, "30")
    lr, plain, dc = (str(tmp_path / n) for n in ("lr.nii.gz", "plain.nii.gz", "dc.nii.gz"))
    refused = mrisr("enhance", lr, dc, "--method", "bspline", "--back-projection", "11")
    assert refused.returncode == 2 and "--back-projection 0 (off) to 10" in refused.stderr and not Path(dc).exists()
    assert "--data-consistency" not in mrisr("enhance", "--help").stdout  # the former name: hidden, still accepted
    for path, extra in ((plain, []), (dc, ["--data-consistency", "2"])):
        run = mrisr("--progress", "none", "enhance", lr, path, "--method", "bspline", *extra)
        assert run.returncode == 0, run.stderr
    acquired = sitk.ReadImage(lr)
    assert consistency(sitk.ReadImage(dc), acquired) > consistency(sitk.ReadImage(plain), acquired) + 5.0
