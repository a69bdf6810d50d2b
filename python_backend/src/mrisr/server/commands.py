"""The `mrisr serve` command and `mrisr enhance --server URL`.

Imports nothing of the server stack at module level, so the CLI starts without the `server` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from mrisr.errors import InputError
from mrisr.imaging.geometry import DEFAULT_MAX_VOXELS
from mrisr.progress import CancelToken, ProgressCallback
from mrisr.server.config import TOKEN_ENVIRONMENT, ServerConfig, new_token

log = logging.getLogger(__name__)
EXTRA_HINT = "install the server extra: pip install 'mrisr[server]' (fastapi, uvicorn, python-multipart, httpx)"


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Add `mrisr serve` to the CLI's subparsers."""
    p = subparsers.add_parser("serve", help="serve enhancements over HTTP (e.g. on a GPU machine) for the CLI "
                                            "and the Slicer module")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only; "
                                                       "0.0.0.0 for every interface, behind TLS)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--token", help=f"bearer token clients must send (default: ${TOKEN_ENVIRONMENT}, else a "
                                   f"random one, printed at start)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda: where jobs run (default auto)")
    p.add_argument("--workers", type=int, help="jobs run at once (default: one per GPU, else 1)")
    p.add_argument("--threads", type=int, help="torch threads per CPU worker (default: the cores divided among "
                                               "the workers)")
    p.add_argument("--queue-size", type=int, default=16, help="waiting jobs accepted (default 16)")
    p.add_argument("--max-upload-mb", type=float, default=2048, help="largest upload in MiB (default 2048)")
    p.add_argument("--max-voxels", type=int, default=DEFAULT_MAX_VOXELS,
                   help=f"largest input or output volume in voxels (default {DEFAULT_MAX_VOXELS:,})")
    p.add_argument("--ttl", type=float, default=3600, help="seconds a finished job waits for download (default 3600)")
    p.add_argument("--work-dir", help="folder for job folders (default: a new temporary folder, removed at exit)")
    p.add_argument("--ssl-certfile", help="TLS certificate (PEM) for HTTPS without a reverse proxy")
    p.add_argument("--ssl-keyfile", help="TLS private key (PEM)")
    p.set_defaults(func=cmd_serve)
    return p


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    """Add --server and --token to `mrisr enhance`."""
    parser.add_argument("--server", help="run on a `mrisr serve` server at this URL (e.g. https://gpu.example:8765)")
    parser.add_argument("--token", help=f"the server's token (default ${TOKEN_ENVIRONMENT})")
    parser.add_argument("--cancel-on-stdin-close", action="store_true",
                        help="with --server: cancel the server's job when standard input closes (for GUIs that "
                             "start this command with a pipe; SIGTERM and Ctrl-C cancel it too)")


def _device_and_workers(device: str, workers: int | None) -> tuple[str, int]:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"server device {device!r} is invalid: use auto, cpu or cuda (each worker takes one GPU)")
    if device == "cuda" and gpus == 0:
        raise InputError("--device cuda was asked for but CUDA is not available here: use --device cpu or auto")
    chosen = "cuda" if device == "cuda" or (device == "auto" and gpus) else "cpu"
    count = workers if workers is not None else (gpus if chosen == "cuda" else 1)
    if count < 1 or (chosen == "cuda" and count > gpus):
        raise InputError(f"--workers {count} is invalid: use 1.." + (str(gpus) if chosen == "cuda" else "N"))
    return chosen, count


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The server's settings from `mrisr serve` arguments (token generated and printed when absent)."""
    token = args.token or os.environ.get(TOKEN_ENVIRONMENT)
    if not token:
        token = new_token()
        print(f"mrisr serve: token {token} (clients pass --token or set {TOKEN_ENVIRONMENT})", flush=True)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise InputError("--ssl-certfile and --ssl-keyfile go together: give both or neither")
    for limit, name in ((args.max_upload_mb, "--max-upload-mb"), (args.ttl, "--ttl"), (args.queue_size, "--queue-size"),
                        (args.max_voxels, "--max-voxels"),
                        (args.threads or 1, "--threads")):
        if limit <= 0:
            raise InputError(f"{name} {limit} is invalid: use a positive number")
    device, workers = _device_and_workers(args.device, args.workers)
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="mrisr-server-"))
    if args.work_dir and work_dir.exists() and any(work_dir.iterdir()):
        raise InputError(f"--work-dir {work_dir} is not empty: give an empty or new folder (it is removed at exit)")
    return ServerConfig(token=token, work_dir=work_dir, device=device, workers=workers,
                        max_upload_bytes=int(args.max_upload_mb * 2**20), max_voxels=args.max_voxels,
                        ttl_seconds=args.ttl, queue_size=args.queue_size, cpu_threads=args.threads)


def cmd_serve(args: argparse.Namespace, progress: ProgressCallback) -> int:
    """Run the server until interrupted."""
    try:
        import uvicorn

        from mrisr.server.app import create_app
    except ImportError:
        raise InputError(f"`mrisr serve` needs FastAPI and uvicorn: {EXTRA_HINT}") from None
    config = server_config(args)
    scheme = "https" if args.ssl_certfile else "http"
    print(f"mrisr serve: {scheme}://{args.host}:{args.port} on {config.device} with {config.workers} worker(s)",
          flush=True)
    logging.getLogger("mrisr").setLevel(logging.INFO)
    uvicorn.run(create_app(config), host=args.host, port=args.port, ssl_certfile=args.ssl_certfile,
                ssl_keyfile=args.ssl_keyfile, log_level="warning")
    return 0


def enhance_remote(args: argparse.Namespace, progress: ProgressCallback) -> int:
    """`mrisr enhance IN OUT --server URL`: the same enhancement, run on the server."""
    from mrisr.plan import EnhanceOptions
    from mrisr.segmentation.agreement import format_agreement

    try:
        from mrisr.server.client import ServerClient, enhance_remote_file
    except ImportError:
        raise InputError(f"`mrisr enhance --server` needs httpx: {EXTRA_HINT}") from None
    token = args.token or os.environ.get(TOKEN_ENVIRONMENT)
    if not token:
        raise InputError(f"--server needs the server's token: pass --token or set {TOKEN_ENVIRONMENT}")
    options = EnhanceOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EnhanceOptions)})
    cancel = CancelToken()
    with cancelled_by_signals(cancel), ServerClient(args.server, token) as client:
        if getattr(args, "cancel_on_stdin_close", False):
            cancel_when_stdin_closes(cancel)
        result = enhance_remote_file(client, args.input, args.output, options, args.reference, progress,
                                     cancel=cancel, uncertainty_path=args.uncertainty,
                                     interpolated_path=args.write_interpolated, segment=args.segment,
                                     segmenter=args.segmenter, reference_seg=args.reference_seg)
    size = "x".join(str(v) for v in result.summary["size"])
    spacing = "x".join(f"{v:g}" for v in result.summary["spacing"])
    samples = f" ({args.samples} samples averaged)" if args.samples > 1 else ""
    print(f"wrote {args.output}: {size} voxels at {spacing} mm with {result.summary['method']}{samples} in "
          f"{result.summary['seconds']:.1f} s on {args.server} ({result.seconds:.1f} s in all)")
    if args.uncertainty:
        print(f"wrote {args.uncertainty}: the samples' per-voxel standard deviation")
    if args.write_interpolated:
        print(f"wrote {args.write_interpolated}: the input interpolated onto the output grid")
    if args.segment:
        print(format_agreement(result.summary["tissues"]["input_vs_output"]))
        print("wrote " + ", ".join(str(p) for name, p in result.files.items() if "seg" in name or "tissues" in name))
    return 0


@contextlib.contextmanager
def cancelled_by_signals(cancel: CancelToken) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT (Ctrl-C, `--parent-pid`'s watchdog) set `cancel` instead of killing
    the process, so the remote job is cancelled (DELETE) before the client exits; a second signal acts as
    usual. Only the main thread can install handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    watched = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    previous = {sig: signal.getsignal(sig) for sig in watched}

    def handle(signum: int, frame: object) -> None:
        cancel.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in watched:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cancel_when_stdin_closes(cancel: CancelToken) -> threading.Thread:
    """Set `cancel` once standard input reaches its end (the GUI that holds the pipe closed it or died)."""
    def watch() -> None:  # raw reads: a daemon thread must hold no lock of sys.stdin at interpreter exit
        with contextlib.suppress(OSError, ValueError):
            while os.read(descriptor, 4096):
                pass
        cancel.cancel()

    descriptor = sys.stdin.fileno()

    watcher = threading.Thread(target=watch, name="mrisr-stdin-watch", daemon=True)
    watcher.start()
    return watcher


def main(argv: list[str] | None = None) -> int:
    """`python -m mrisr.server [serve options]`: the serve command without the rest of the CLI."""
    from mrisr.errors import MRISRError

    parser = argparse.ArgumentParser(prog="python -m mrisr.server")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return cmd_serve(args, lambda event: None)
    except MRISRError as exc:
        print(f"mrisr: error: {exc}", file=sys.stderr)
        return 2
