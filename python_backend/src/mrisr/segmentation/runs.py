"""Segmentation runs for the CLI and the Slicer module: segment one file, or the interpolated input and
the enhanced output of one enhancement, and report their agreement (per-label Dice and volumes)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from mrisr.segmentation.agreement import agreement_table, label_volumes_ml
from mrisr.imaging.geometry import Grid, check_same_grid, interpolated_input
from mrisr.progress import CancelToken, ProgressCallback, no_progress
from mrisr.io.reporting import write_json
from mrisr.segmentation.segmenter import segment_image
from mrisr.io.segmentations import read_labels, write_labels
from mrisr.io.volumes import check_output_path, read_volume


@dataclass(frozen=True)
class SegmentationPaths:
    """Files written by `enhance --segment` beside the enhanced volume."""

    input_seg: Path
    output_seg: Path
    report: Path

    @classmethod
    def beside(cls, output: str | os.PathLike) -> "SegmentationPaths":
        """enhanced.nii.gz → enhanced_input.seg.nrrd, enhanced.seg.nrrd, enhanced_tissues.json."""
        output = Path(output)
        stem = output.name.split(".")[0]
        return cls(output.with_name(f"{stem}_input.seg.nrrd"), output.with_name(f"{stem}.seg.nrrd"),
                   output.with_name(f"{stem}_tissues.json"))


def _agreement(first: sitk.Image, second: sitk.Image, names: tuple[str, str]) -> list[dict[str, Any]]:
    check_same_grid(first, second)
    return agreement_table(sitk.GetArrayViewFromImage(first), sitk.GetArrayViewFromImage(second),
                           first.GetSpacing(), names)


def segment_file(input_path: str | os.PathLike, output_path: str | os.PathLike, segmenter: str = "unet",
                 device: str = "cpu", reference_seg: str | os.PathLike | None = None,
                 report_path: str | os.PathLike | None = None, progress: ProgressCallback = no_progress) -> dict[str, Any]:
    """Segment a volume into tissue labels and write them; with a reference label map, also their agreement."""
    protect = tuple(p for p in (input_path, reference_seg) if p is not None)
    check_output_path(output_path, protect)
    reference = read_labels(reference_seg) if reference_seg else None
    labels = segment_image(read_volume(input_path), segmenter, device, progress)
    rows = _agreement(labels, reference, ("segmentation", "reference")) if reference is not None else None
    write_labels(labels, output_path, protect=protect)
    report = {"input": str(input_path), "segmentation": str(output_path), "segmenter": segmenter,
              "spacing_mm": list(labels.GetSpacing()),
              "volumes_ml": label_volumes_ml(sitk.GetArrayViewFromImage(labels), labels.GetSpacing()),
              "segmentation_vs_reference": rows}
    if report_path:
        write_json(report, report_path)
    return report


def segment_enhancement(input_image: sitk.Image, enhanced: sitk.Image, paths: SegmentationPaths,
                        segmenter: str = "unet", device: str = "cpu", reference_seg: sitk.Image | None = None,
                        protect: tuple[str | os.PathLike, ...] = (), progress: ProgressCallback = no_progress,
                        cancel: CancelToken | None = None) -> dict[str, Any]:
    """Segment the input interpolated (B-spline) onto the enhanced grid and the enhanced volume; write
    both label maps and a JSON report of their agreement (and of each with `reference_seg`)."""
    interpolated = interpolated_input(input_image, Grid.of(enhanced))
    input_labels = segment_image(interpolated, segmenter, device, progress, cancel)
    output_labels = segment_image(enhanced, segmenter, device, progress, cancel)
    report: dict[str, Any] = {"segmenter": segmenter, "spacing_mm": list(enhanced.GetSpacing()),
                              "input_vs_output": _agreement(input_labels, output_labels, ("input", "output"))}
    if reference_seg is not None:
        report["input_vs_reference"] = _agreement(input_labels, reference_seg, ("input", "reference"))
        report["output_vs_reference"] = _agreement(output_labels, reference_seg, ("output", "reference"))
    write_labels(input_labels, paths.input_seg, protect=protect)
    write_labels(output_labels, paths.output_seg, protect=protect)
    report["files"] = {"input_seg": str(paths.input_seg), "output_seg": str(paths.output_seg)}
    write_json(report, paths.report)
    return report
