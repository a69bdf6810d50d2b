"""The `mrisr` command line: enhance, plan, segment, methods, degrade, evaluate, demo, bench and train.

User errors print one line (`mrisr: error: …`) and exit 2 without a traceback or a partial output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import mrisr.device  # noqa: F401  (first: it prepares the environment torch reads on import)
from mrisr.adaptation.settings import DEFAULT_SECONDS as ADAPT_DEFAULT_SECONDS
from mrisr.errors import CancelledError, MRISRError
from mrisr.imaging.geometry import DEFAULT_MAX_VOXELS
from mrisr.progress import ProgressCallback
from mrisr.io.reporting import make_progress

log = logging.getLogger("mrisr")


def _add_enhance_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", help="method name (see `mrisr methods`); default: the registry default")
    parser.add_argument("--steps", type=int, help="number of sampling steps (diffusion methods)")
    parser.add_argument("--start-step", type=int, help="partial diffusion start step K (PDM)")
    parser.add_argument("--patch-size", type=int, help="patch side in voxels (patch-based methods)")
    parser.add_argument("--overlap", type=float, default=0.25, help="patch overlap fraction in [0, 1) (default 0.25)")
    parser.add_argument("--target-spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                        help="output spacing in mm; default: the input's finest spacing on every axis, but not "
                             "finer than the method was trained for and coarsened to fit a default grid of "
                             "at most 24 M voxels (see `mrisr plan`)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto: "
                                                          "CUDA, else Apple MPS, else CPU)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--samples", type=int, default=1,
                        help="diffusion methods: average this many posterior samples (seeds SEED, SEED+1, …); "
                             "N times the run time (default 1)")
    parser.add_argument("--back-projection", type=int, default=0, metavar="N",
                        help="N back-projection iterations that make the output agree with the acquired slices "
                             "(0 = off, the default); helps on real thick-slice scans, hurts when the input's "
                             "contrast differs from the wanted output (low-field)")
    parser.add_argument("--data-consistency", type=int, dest="back_projection", help=argparse.SUPPRESS)  # old name
    parser.add_argument("--adapt", type=float, nargs="?", const=ADAPT_DEFAULT_SECONDS, default=0.0, metavar="SECONDS",
                        help="first fine-tune the method on pairs cut from this scan's own fine axes for SECONDS "
                             f"(default {ADAPT_DEFAULT_SECONDS:g} when given without a value); the result is cached "
                             "for this input, so re-runs with other steps or samples reuse it (ressrdiff)")
    parser.add_argument("--slice-thickness", type=float, metavar="MM",
                        help="slice thickness of the thick axis for --adapt (default: DICOM SliceThickness, else "
                             "the slice spacing)")
    parser.add_argument("--batch-size", type=int, help="patches or slices per network call")
    parser.add_argument("--planes", default="auto",
                        help="2D methods: slice planes, auto or a comma list of axial, coronal, sagittal "
                             "(several = multi-plane fusion)")
    parser.add_argument("--max-voxels", type=int, default=DEFAULT_MAX_VOXELS,
                        help=f"refuse outputs larger than this many voxels (default {DEFAULT_MAX_VOXELS:,})")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of `enhance` that `plan` takes too: the enhance options and the extra files of a run."""
    parser.add_argument("--reference", help="reference volume of another contrast (multi-contrast methods)")
    _add_enhance_options(parser)
    parser.add_argument("--uncertainty", help="also write the per-voxel standard deviation of the samples here "
                                              "(needs --samples 2 or more): where the detail is guessed, not measured")
    parser.add_argument("--write-interpolated", metavar="PATH",
                        help="also write the input interpolated (B-spline) onto the output grid here: the image "
                             "`--segment` segments as the input, and the one the Slicer module shows as the input")
    parser.add_argument("--segment", action="store_true",
                        help="also segment brain tissue (CSF/GM/WM) of the interpolated input and of the output: "
                             "writes OUT_input.seg.nrrd, OUT.seg.nrrd and OUT_tissues.json (Dice, volumes) beside OUT")
    _add_segment_options(parser)


def _run_files(args: argparse.Namespace):
    from mrisr.plan import RunFiles

    return RunFiles(args.output, args.uncertainty, args.write_interpolated, args.segment, args.reference_seg)


def _enhance_options(args: argparse.Namespace):
    from mrisr.plan import EnhanceOptions

    return EnhanceOptions(
        method=args.method, steps=args.steps, start_step=args.start_step, patch_size=args.patch_size,
        overlap=args.overlap, target_spacing=args.target_spacing, device=args.device, seed=args.seed,
        batch_size=args.batch_size, max_voxels=args.max_voxels, planes=args.planes, samples=args.samples,
        back_projection=args.back_projection, adapt=args.adapt, slice_thickness=args.slice_thickness,
    )


def cmd_enhance(args: argparse.Namespace, progress: ProgressCallback) -> int:
    from mrisr.run_progress import OverallProgress, carried_overall

    if args.server:  # a client of `mrisr serve`: no torch needed here
        from mrisr.server.commands import enhance_remote

        return enhance_remote(args, carried_overall(progress))
    from mrisr.pipeline import enhance_file
    from mrisr.plan import check_files

    files = _run_files(args)
    check_files(files, tuple(p for p in (args.input, args.reference, args.reference_seg) if p), args.samples)
    progress = OverallProgress(progress)
    result = enhance_file(args.input, args.output, _enhance_options(args), args.reference, progress,
                          uncertainty_path=args.uncertainty, interpolated_path=args.write_interpolated,
                          segment_after=args.segment)
    size = "x".join(str(v) for v in result.image.GetSize())
    spacing = "x".join(f"{v:g}" for v in result.image.GetSpacing())
    samples = f" ({args.samples} samples averaged)" if args.samples > 1 else ""
    print(f"wrote {args.output}: {size} voxels at {spacing} mm with {result.method}{samples} in {result.seconds:.1f} s")
    if result.self_check is not None:
        print(result.self_check.message)
    if args.uncertainty:
        print(f"wrote {args.uncertainty}: the samples' per-voxel standard deviation")
    if args.write_interpolated:
        print(f"wrote {args.write_interpolated}: the input interpolated onto the output grid")
    if args.segment:
        _segment_enhancement(args, result.image, files.segmentation(), progress)
        progress.finish("segmented the input and the output")
    return 0


def cmd_plan(args: argparse.Namespace, progress: ProgressCallback) -> int:
    """What `enhance` would do with these arguments, without running a method (exit 2 if it would refuse)."""
    from mrisr.plan import plan_run

    plan = plan_run(args.input, _enhance_options(args), _run_files(args), args.reference)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        answer = plan.to_json()
        if answer["output"] is not None:
            out = answer["output"]
            print(f"output: {'x'.join(map(str, out['size']))} voxels at {'x'.join(f'{v:g}' for v in out['spacing'])} mm "
                  f"({out['voxels']:,} voxels, {out['memory_mib']:.1f} MiB as float32) with {answer['method']}")
            if out.get("device_memory_mib"):
                print(f"GPU memory: about {out['device_memory_mib']:,.0f} MiB (estimate)")
        if answer["expected_seconds"] is not None:
            print(f"expected time: about {answer['expected_seconds']:,.1f} s at the measured CPU rates")
        for role, path in answer["files"].items():
            print(f"{role}: {path}")
    for warning in plan.warnings:
        print(f"mrisr: warning: {warning}", file=sys.stderr)
    for error in plan.errors:
        print(f"mrisr: error: {error}", file=sys.stderr)
    return 2 if plan.errors else 0


def _segment_enhancement(args: argparse.Namespace, enhanced, paths, progress: ProgressCallback) -> None:
    from mrisr.segmentation.agreement import format_agreement
    from mrisr.device import resolve_device
    from mrisr.io.segmentations import read_labels
    from mrisr.segmentation.runs import segment_enhancement
    from mrisr.io.volumes import read_volume

    reference = read_labels(args.reference_seg) if args.reference_seg else None
    report = segment_enhancement(read_volume(args.input), enhanced, paths, args.segmenter,
                                 resolve_device(args.device), reference, (args.input,), progress)
    print(format_agreement(report["input_vs_output"]))
    print(f"wrote {paths.input_seg}, {paths.output_seg} and {paths.report}")


def cmd_segment(args: argparse.Namespace, progress: ProgressCallback) -> int:
    from mrisr.segmentation.agreement import format_agreement
    from mrisr.device import resolve_device
    from mrisr.segmentation.runs import segment_file

    report = segment_file(args.input, args.output, args.segmenter, resolve_device(args.device), args.reference_seg,
                          args.json, progress)
    print("  ".join(f"{name}: {ml:.1f} mL" for name, ml in report["volumes_ml"].items()))
    if report["segmentation_vs_reference"]:
        print(format_agreement(report["segmentation_vs_reference"]))
    print(f"wrote {args.output} ({args.segmenter}: background, CSF, grey matter, white matter)")
    return 0


def _add_segment_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--segmenter", default="unet", choices=("unet", "gmm"),
                        help="unet: the shipped tissue U-Net (default); gmm: classical EM fallback for "
                             "skull-stripped T1 images")
    parser.add_argument("--reference-seg", help="reference label map (0 bg, 1 CSF, 2 GM, 3 WM) on the same grid "
                                                "as the segmentation, for Dice against it")


def cmd_methods(args: argparse.Namespace, progress: ProgressCallback) -> int:
    from mrisr.io.model_store import find_card
    from mrisr.plan import catalog
    from mrisr.registry import default_method, method_specs

    specs = method_specs()
    if args.json:
        print(json.dumps(catalog(), indent=2))
        return 0
    for spec in specs.values():
        marks = " (default)" if spec.name == default_method() else ""
        defaults = [f"{k}={getattr(spec, k).default}" for k in ("steps", "start_step", "patch_size") if getattr(spec, k)]
        weights = "-" if spec.kind == "interpolation" else ("yes" if find_card(spec.config.get("card", "")) else "none")
        print(f"{spec.name:<15}{spec.kind:<15}weights {weights:<6}{', '.join(defaults) or '-':<38}{spec.description}{marks}")
        presets = spec.config.get("presets", {})
        if presets:
            sizes = ", ".join(f"{name} {p['parameters'] / 1e6:.2f} M" for name, p in presets.items() if "parameters" in p)
            print(f"{'':<15}presets: {sizes} parameters")
    return 0


def _degradation_config(args: argparse.Namespace):
    from mrisr.simulation.degradation import DegradationConfig, get_preset

    config = get_preset(args.preset) if args.preset else DegradationConfig()
    overrides = {
        "axis": args.axis, "slice_thickness": args.thickness, "slice_gap": args.gap,
        "kspace_factor": args.kspace_factor, "downsample_factor": args.downsample,
        "contrast_gamma": args.gamma, "contrast_compression": args.compression, "snr": args.snr,
        "noise": args.noise, "seed": args.seed,
    }
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def cmd_degrade(args: argparse.Namespace, progress: ProgressCallback) -> int:
    from mrisr.simulation.degradation import degrade_to_hr_grid
    from mrisr.io.volumes import check_output_path, read_volume, write_volume

    config = _degradation_config(args)
    for path in filter(None, (args.output, args.hr_grid_output)):
        check_output_path(path, (args.input,))
    lr, on_hr = degrade_to_hr_grid(read_volume(args.input), config)
    write_volume(lr, args.output, protect=(args.input,))
    if args.hr_grid_output:
        write_volume(on_hr, args.hr_grid_output, protect=(args.input,))
    size = "x".join(str(v) for v in lr.GetSize())
    spacing = "x".join(f"{v:g}" for v in lr.GetSpacing())
    print(f"wrote {args.output}: {size} voxels at {spacing} mm ({config})")
    return 0


def _evaluation_mask(choice: str, reference):
    """The voxels scored: the reference's foreground (auto), all voxels (none) or a mask file."""
    import SimpleITK as sitk

    from mrisr.imaging.foreground import foreground_mask
    from mrisr.io.volumes import read_volume

    if choice == "none":
        return None
    if choice == "auto":
        return foreground_mask(sitk.GetArrayFromImage(reference))
    return sitk.GetArrayFromImage(read_volume(choice)) > 0


def cmd_evaluate(args: argparse.Namespace, progress: ProgressCallback) -> int:
    from mrisr.evaluation.metrics import evaluate, format_table
    from mrisr.io.reporting import write_json
    from mrisr.io.volumes import read_volume

    lr = read_volume(args.input) if args.input else None
    reference = read_volume(args.reference)
    mask = _evaluation_mask(args.mask, reference)
    scores = evaluate(read_volume(args.prediction), reference, lr, mask)
    print(format_table({Path(args.prediction).name: scores}))
    print(f"PSNR/SSIM over {'all voxels' if mask is None else f'{int(mask.sum()):,} masked voxels'} "
          f"(mask: {args.mask}); MS-SSIM and GMSD slice-averaged over the whole slices")
    if args.json:
        write_json({"prediction": str(args.prediction), "reference": str(args.reference),
                    "mask": args.mask, **scores}, args.json)
    return 0


def cmd_demo(args: argparse.Namespace, progress: ProgressCallback) -> int:
    from mrisr.evaluation.demo import run_demo
    from mrisr.run_progress import carried_overall

    table = run_demo(Path(args.output_dir), _enhance_options(args), args.preset, carried_overall(progress))
    print(table)
    return 0


def cmd_bench(args: argparse.Namespace, progress: ProgressCallback) -> int:
    import importlib
    import platform
    import time

    import torch

    from mrisr.io.reporting import write_json

    module = importlib.import_module(f"mrisr.evaluation.benchmarks.{args.bench}")
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    results = module.run(args, progress)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    write_json({"benchmark": args.bench, "started": started, "machine": machine, "results": results}, args.out)
    print(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


def cmd_train(args: argparse.Namespace, progress: ProgressCallback) -> int:
    import importlib

    from mrisr.device import resolve_device
    from mrisr.errors import InputError
    from mrisr.training import volume_folder
    from mrisr.training.trainer import TrainConfig, Trainer

    try:
        tasks = importlib.import_module(f"mrisr.training.tasks.{args.method}")
    except ModuleNotFoundError:
        raise InputError(f"method {args.method!r} has no training recipe: see `mrisr methods`") from None
    if args.data:
        if args.method == "tissueseg":
            raise InputError("--data is for the enhancement methods: tissueseg trains on deformed MNI152 "
                             "anatomies with their tissue maps; leave --data out")
        os.environ[volume_folder.ENVIRONMENT] = str(Path(args.data).expanduser().resolve())
        os.environ[volume_folder.MIX_ENVIRONMENT] = str(max(0, args.mix_synthetic))
        volume_folder.VolumeFolder(args.data)  # refuse a malformed folder before any work
    elif args.mix_synthetic:
        raise InputError("--mix-synthetic adds built-in pairs to a --data folder: give --data DIR too")
    task = tasks.make_task(args.preset, args)
    config = TrainConfig(steps=args.steps, out=Path(args.out), learning_rate=args.lr, seed=args.seed,
                         device=resolve_device(args.device), validate_every=args.validate_every,
                         checkpoint_every=args.checkpoint_every, data=os.environ.get(volume_folder.ENVIRONMENT))
    card = Trainer(task, config, progress).run(time_budget=args.time_budget)
    print(f"wrote {card}" if card else f"paused; checkpoint in {args.out} (run the same command to resume)")
    return 0


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a method's network on synthetic pairs (resumable; works under torchrun)")
    p.add_argument("--method", required=True)
    p.add_argument("--preset", default="cpu", choices=("cpu", "paper"))
    p.add_argument("--steps", type=int, required=True, help="total optimiser steps")
    p.add_argument("--out", required=True, help="folder for checkpoint, log, final weights and model card")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the recipe's)")
    p.add_argument("--pairs", type=int, default=16, help="synthetic training volumes in the pool (default 16)")
    p.add_argument("--data", help="train on your own HR volumes instead of the synthetic pairs: "
                                  "DIR/train/<subject>/target.nii.gz (+ optional reference.nii.gz), same under "
                                  "DIR/validation/; each target is degraded by the random low-field simulator")
    p.add_argument("--mix-synthetic", type=int, default=0,
                   help="with --data: also train on this many built-in MNI152 synthetic pairs")
    p.add_argument("--validate-every", type=int, default=500)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--time-budget", type=float, help="pause with a checkpoint after this many seconds")
    p.add_argument("--stage", type=int, help="training stage of multi-stage recipes (DiffMSR: 1 or 2)")
    p.add_argument("--init", help="weights to start a later stage from: a model card or its run folder")
    p.set_defaults(func=cmd_train)


def cmd_synthesize(args: argparse.Namespace, progress: ProgressCallback) -> int:
    from mrisr.simulation.label_synthesis import write_subject_folder

    recipes = write_subject_folder(args.labels, args.out, args.count, args.validation_maps, args.seed,
                                   include_mni=args.mni, progress=progress)
    families = sorted({r.family for r in recipes})
    spacings = [r.spacing_mm for r in recipes]
    print(f"wrote {len(recipes)} subjects to {args.out} (contrasts {', '.join(families)}; "
          f"voxels {min(spacings):.2f}–{max(spacings):.2f} mm); train with `mrisr train --data {args.out}`")
    return 0


def _add_synthesize_parser(sub) -> None:
    p = sub.add_parser("synthesize", help="write label-driven synthetic HR subjects (SynthSR-style) as a "
                                          "`mrisr train --data` folder")
    p.add_argument("labels", help="folder of 1 mm FreeSurfer-numbered label maps (*labels*.nii.gz, aseg.mgz)")
    p.add_argument("out", help="folder to write train/<subject>/target.nii.gz and validation/… into")
    p.add_argument("--count", type=int, default=24, help="training subjects (default 24)")
    p.add_argument("--validation-maps", type=int, default=1,
                   help="label maps kept for validation subjects only (default 1: the last one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mni", action="store_true", help="also draw anatomy from the MNI152 template's tissue labels "
                                                      "(needs the eval extra)")
    p.set_defaults(func=cmd_synthesize)


def _add_bench_parsers(sub, selected: str | None) -> None:
    """One sub-command per benchmark module; only the `selected` one is imported (for its options)."""
    import importlib

    from mrisr.evaluation.benchmarks import available

    bench = sub.add_parser("bench", help="speed/memory/quality benchmarks; results go to a JSON file")
    names = bench.add_subparsers(dest="bench", required=True)
    for name, summary in available().items():
        p = names.add_parser(name, help=summary)
        p.add_argument("--out", default=f"bench-{name}.json", help="where to write the results JSON")
        if name == selected:
            importlib.import_module(f"mrisr.evaluation.benchmarks.{name}").add_arguments(p)
        p.set_defaults(func=cmd_bench)


def _selected_bench(argv: list[str]) -> str | None:
    """The NAME of `mrisr … bench NAME …`, or None."""
    if "bench" not in argv:
        return None
    rest = [a for a in argv[argv.index("bench") + 1:] if not a.startswith("-")]
    return rest[0] if rest else None


def build_parser(bench: str | None = None) -> argparse.ArgumentParser:
    """The `mrisr` argument parser; `bench` names the benchmark whose options to load (see _selected_bench)."""
    parser = argparse.ArgumentParser(prog="mrisr", description="MRI super-resolution / image quality transfer")
    parser.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto",
                        help="progress on stderr: tqdm bars with ETA, JSON lines (for GUIs) or nothing; "
                             "auto = bars on a terminal, nothing otherwise")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--parent-pid", type=int, metavar="PID",
                        help="stop as on Ctrl-C (no output, temporary files removed; a --server job is cancelled) "
                             "once process PID has ended: for GUIs such as the Slicer module that start mrisr")
    sub = parser.add_subparsers(dest="command", required=True)
    from mrisr.server.commands import add_remote_options, add_serve_parser

    p = sub.add_parser("enhance", help="enhance a volume (NIfTI/NRRD/MHA file or DICOM folder)")
    p.add_argument("input")
    p.add_argument("output")
    _add_run_options(p)
    add_remote_options(p)
    p.set_defaults(func=cmd_enhance)

    p = sub.add_parser("plan", help="what enhance would make (output grid, memory, files) or refuse, "
                                    "without running a method")
    p.add_argument("input")
    p.add_argument("output", nargs="?", help="the output path enhance would get (to name the files it writes)")
    _add_run_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable answer (always printed, also with errors)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("segment", help="segment brain tissue (background, CSF, GM, WM) of a T1-weighted volume")
    p.add_argument("input")
    p.add_argument("output", help="label map: .seg.nrrd (Slicer segmentation) or .nii.gz/.nrrd")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--json", help="also write a JSON report (volumes, Dice against --reference-seg)")
    _add_segment_options(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("methods", help="list the methods with their defaults")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("degrade", help="simulate a low-field / thick-slice acquisition of a volume")
    p.add_argument("input")
    p.add_argument("output", help="the low-resolution volume on its own (coarser) grid")
    p.add_argument("--hr-grid-output", help="also write it resampled (B-spline) back onto the input grid")
    p.add_argument("--preset", help="start from a named preset (thick5, iqt8, kspace2, kspace4, down4, lowfield)")
    p.add_argument("--axis", type=int, help="slice axis 0/1/2 (x/y/z)")
    p.add_argument("--thickness", type=float, help="slice thickness (FWHM of the slice profile) in mm")
    p.add_argument("--gap", type=float, help="gap between slices in mm")
    p.add_argument("--kspace-factor", type=float, help="in-plane k-space truncation factor (1 = off)")
    p.add_argument("--downsample", type=float, help="image-space down-sampling factor (1 = off)")
    p.add_argument("--gamma", type=float, help="contrast gamma (1 = off)")
    p.add_argument("--compression", type=float, help="tissue contrast compression in [0, 1)")
    p.add_argument("--snr", type=float, help="signal-to-noise ratio of the added noise")
    p.add_argument("--noise", choices=("gaussian", "rician"), help="noise model")
    p.add_argument("--seed", type=int, help="random seed")
    p.set_defaults(func=cmd_degrade)

    p = sub.add_parser("evaluate", help="image-quality metrics of a prediction against a reference")
    p.add_argument("prediction")
    p.add_argument("reference")
    p.add_argument("--input", help="the LR input, for the consistency metric")
    p.add_argument("--mask", default="auto",
                   help="voxels for PSNR/SSIM: auto (reference foreground, Otsu), none (all) or a mask file")
    p.add_argument("--json", help="also write the scores to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="make a low-field sample from the packaged MNI152 template and enhance it")
    p.add_argument("output_dir")
    p.add_argument("--preset", default="lowfield", help="degradation preset for the sample (default lowfield)")
    _add_enhance_options(p)
    p.set_defaults(func=cmd_demo)
    _add_bench_parsers(sub, bench)
    _add_train_parser(sub)
    _add_synthesize_parser(sub)
    add_serve_parser(sub)
    return parser


PARENT_CHECK_SECONDS = 1.0
PARENT_GONE_GRACE_SECONDS = 30.0  # after the interrupt, how long the clean-up may take before a hard exit


def _process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (Windows: without os.kill, which would terminate it)."""
    if os.name == "nt":
        import ctypes

        kernel = ctypes.windll.kernel32
        handle = kernel.OpenProcess(0x00100000, False, pid)  # SYNCHRONIZE
        if not handle:
            return False
        try:
            return kernel.WaitForSingleObject(handle, 0) == 0x102  # WAIT_TIMEOUT: not signalled, still running
        finally:
            kernel.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(pid: int) -> threading.Thread:
    """A daemon thread that interrupts this command like Ctrl-C once process `pid` has ended, so that
    outputs and temporary files are cleaned up as on an interrupt; exits hard if that takes too long."""
    import _thread

    def watch() -> None:
        while _process_alive(pid):
            time.sleep(PARENT_CHECK_SECONDS)
        log.warning("process %d that started mrisr has ended: stopping", pid)
        _thread.interrupt_main()
        time.sleep(PARENT_GONE_GRACE_SECONDS)
        os._exit(130)

    watcher = threading.Thread(target=watch, name="mrisr-parent-watch", daemon=True)
    watcher.start()
    return watcher


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mrisr` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_selected_bench(argv)).parse_args(argv)
    if args.parent_pid is not None:
        _watch_parent(args.parent_pid)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    kind = args.progress if args.progress != "auto" else ("bar" if sys.stderr.isatty() else "none")
    progress, close = make_progress(kind)
    try:
        code = args.func(args, progress)
        close()
        return code
    except CancelledError as exc:
        close()
        print(f"mrisr: cancelled: {exc}", file=sys.stderr)
        return 130
    except MRISRError as exc:
        close()
        print(f"mrisr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        close()
        print("mrisr: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
