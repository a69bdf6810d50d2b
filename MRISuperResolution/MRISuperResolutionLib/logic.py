"""Enhance a volume node with the backend in a background process and bring the result into the scene.

`EnhanceLogic` is the module's logic without Qt: the Slicer module's Logic class adds the parameter
node and Qt-timer polling on top of it, and the tests drive it on a plain slicer-core scene.

Every run is first checked by the backend (`mrisr plan`: the same one-line refusals as `mrisr enhance`,
the output grid and the files the run writes), so no backend rule is copied here. The scene changes
only when a run succeeds: the enhanced volume (its own geometry), the input interpolated onto that grid
by the backend (`--write-interpolated`: the image the input's tissue segmentation is made from) and
their difference are built outside the scene first and added in one go; on failure or cancel nothing is
added and the temporary folder is removed.

With a server (`server=URL`, or `logic.server`), the same local backend process runs as a client of
`mrisr serve` (`enhance --server URL`, the token in its environment): progress, cancel (which cancels the
server's job too), results and failures take exactly the local path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import traceback
from typing import Callable, Optional, Sequence

import slicer

from . import difference as diff
from . import nodeio, sampledata, tissues
from .uncertainty import showAsUncertainty
from .dependencies import backendEnvironment, loadCatalog, planRun
from .layout import ComparisonLayout
from .presets import Preset, presetNamed, presetsFor
from .parameters import EnhanceCancelled, EnhanceError, EnhanceParameters, MethodCatalog, MethodInfo, RunPlan
from .process import BackendProcess, ProgressUpdate, backendCommand, defaultPythonExecutable, formatRemaining, processAlive

log = logging.getLogger(__name__)

INPUT_ROLE = "MRISuperResolution.Input"
INTERPOLATED_ROLE = "MRISuperResolution.Interpolated"
DIFFERENCE_ROLE = "MRISuperResolution.Difference"
INPUT_SEGMENTATION_ROLE = "MRISuperResolution.InputSegmentation"
OUTPUT_SEGMENTATION_ROLE = "MRISuperResolution.OutputSegmentation"
TISSUE_TABLE_ROLE = "MRISuperResolution.TissueTable"
UNCERTAINTY_ROLE = "MRISuperResolution.Uncertainty"
UNCERTAINTY_FILE = "uncertainty"
INTERPOLATED_FILE = "interpolated"
ATTRIBUTE_PREFIX = "MRISuperResolution."
TEMP_PREFIX = "MRISR-"
OWNER_FILE = "owner.pid"  # in each temporary folder: the Slicer process it belongs to
SELF_CHECK_STAGE = "self-check"
TOKEN_ENVIRONMENT = "MRISR_SERVER_TOKEN"
FILE_SUFFIX = ".nii"

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"

_runningJobs: list["EnhanceJob"] = []  # every running job of this process, panel and console alike


def runningJobs() -> list["EnhanceJob"]:
    """The enhancements running in this process, whichever logic started them (panel or Python console)."""
    return [job for job in _runningJobs if job.running]


def cancelRunningJobs() -> int:
    """Cancel every running enhancement (Slicer closes the scene or quits); returns how many were running."""
    jobs = runningJobs()
    for job in jobs:
        job.cancel()
    return len(jobs)


def removeOrphanedWorkDirs(root: str) -> list[str]:
    """Remove this module's temporary folders under `root` whose Slicer process has ended (its backend
    stopped itself through --parent-pid, but could not remove the inputs Slicer wrote); returns them."""
    removed = []
    try:
        names = [name for name in os.listdir(root) if name.startswith(TEMP_PREFIX)]
    except OSError:
        return removed
    for name in names:
        folder = os.path.join(root, name)
        try:
            with open(os.path.join(folder, OWNER_FILE), encoding="utf-8") as owner:
                pid = int(owner.read().strip())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if pid != os.getpid() and not processAlive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def resultName(inputNode, method: MethodInfo, parameters: EnhanceParameters, region: bool = False) -> str:
    """`<input> enhanced (<method>, <steps>)`, e.g. "T1 enhanced (ressrdiff, 1 step)" or "T1 enhanced (bspline)";
    ", region" when only a ROI of the input was enhanced."""
    details = [method.name, method.stepsLabel(parameters.steps)]
    if parameters.adapt:
        details.append("adapted")
    if region:
        details.append("region")
    return f"{inputNode.GetName()} enhanced ({', '.join(d for d in details if d)})"


class EnhanceJob:
    """One enhancement in progress. Call `poll()` from the main thread (a timer in Slicer) or `wait()`."""

    def __init__(self, logic: "EnhanceLogic", process: BackendProcess, workDir: str, inputNode, outputNode,
                 method: MethodInfo, parameters: EnhanceParameters, plan: RunPlan,
                 onProgress: Optional[Callable[["EnhanceJob"], None]] = None,
                 onFinished: Optional[Callable[["EnhanceJob"], None]] = None) -> None:
        self.logic = logic
        self.plan = plan  # the backend's plan of this run: output grid and the files it writes
        self.process = process
        self.workDir = workDir
        self.inputNode = inputNode
        self.requestedOutputNode = outputNode
        self.method = method
        self.parameters = parameters
        self.onProgress = onProgress
        self.onFinished = onFinished
        self.state = RUNNING
        self.progress: Optional[ProgressUpdate] = None
        self.updates: list[ProgressUpdate] = []  # every progress line of the run, in order
        self.fraction = 0.0
        self.outputNode = None
        self.errorMessage = ""
        self.started = time.monotonic()
        self.seconds: Optional[float] = None
        self.selfCheck = ""  # the backend's self-check verdict of a learned run ("self-check ok (…)" / "…FLAGGED…")
        self.warnings: tuple[str, ...] = plan.warnings  # the run goes ahead, e.g. outside the training range
        self.server: Optional[str] = None  # the server's URL for a remote run
        self.roiNode = None  # the markups ROI the input was cropped to (None: the whole input)
        self.details = ""  # after a failure: everything the backend wrote to stderr (or the traceback), for "Show details"
        _runningJobs.append(self)

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def remainingSeconds(self) -> Optional[float]:
        """The backend's estimate of the seconds left (None when it sends none)."""
        return self.progress.etaSeconds if self.progress is not None and self.running else None

    def statusText(self) -> str:
        if self.state == RUNNING:
            if self.progress is None:
                return f"{self.method.name}: starting"
            remaining = self.remainingSeconds
            left = f", {formatRemaining(remaining)}" if remaining is not None else ""
            return f"{self.method.name}: {self.progress.text()}{left}"
        if self.state == SUCCEEDED:
            where = f" on {self.server}" if self.server else ""
            check = f"; {self.selfCheck}" if self.selfCheck else ""
            return f"{self.method.name} finished in {self.seconds:.1f} s{where}{check}"
        if self.state == CANCELLED:
            return "cancelled: the scene was left unchanged"
        return f"failed: {self.errorMessage}"

    def poll(self) -> bool:
        """Take in new progress; finish up when the process has ended. True while still running."""
        if self.state != RUNNING:
            return False
        updates = self.process.poll()
        self.updates += updates
        for update in updates:
            self.progress = update
            self.fraction = max(self.fraction, update.overallFraction)
            if update.stage == SELF_CHECK_STAGE and update.total > 0 and update.done >= update.total:
                self.selfCheck = update.message
        if updates:
            self._call(self.onProgress)
        if not self.process.finished:
            return True
        self._finish()
        return False

    def cancel(self) -> None:
        """Kill the backend's process tree (a remote run cancels its server job first); nothing is added
        to the scene. The job ends as cancelled even when the process tree could not be stopped in time."""
        if self.state == RUNNING:
            try:
                self.process.cancel()
            except Exception:  # never leave the job "running" because stopping the process failed
                log.exception("stopping the backend failed")
                self.process.cancelled = True
            self._finish()

    def wait(self, idle: Optional[Callable[[], None]] = None, interval: float = 0.05,
             timeout: Optional[float] = None):
        """Block until done (calling `idle` between polls) and return the output node, or raise."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise EnhanceError(f"the backend did not finish within {timeout:g} s and was stopped")
            if idle is not None:
                idle()
            time.sleep(interval)
        return self.result()

    def result(self):
        """The output node of a finished job; EnhanceCancelled / EnhanceError for the other outcomes."""
        if self.state == SUCCEEDED:
            return self.outputNode
        if self.state == CANCELLED:
            raise EnhanceCancelled(self.errorMessage)
        if self.state == FAILED:
            raise EnhanceError(self.errorMessage)
        raise EnhanceError("the enhancement is still running")

    def _finish(self) -> None:
        try:
            if self.process.cancelled:
                self.state, self.errorMessage = CANCELLED, "cancelled by the user; the scene was left unchanged"
            elif self.process.returncode != 0:
                self.state, self.errorMessage = FAILED, self.process.errorMessage()
                self.details = self.process.stderrText() or self.errorMessage
                log.error("the backend failed (exit code %s): %s\n%s", self.process.returncode, self.errorMessage,
                          self.details)
            else:
                self.outputNode = self.logic.importResult(self)
                self.state, self.fraction = SUCCEEDED, 1.0
        except EnhanceError as exc:
            self.state, self.errorMessage, self.details = FAILED, str(exc), str(exc)
        except Exception as exc:  # an unexpected failure while loading: report it, keep the scene as it was
            log.exception("loading the enhanced volume failed")
            self.state, self.errorMessage = FAILED, f"could not load the enhanced volume: {exc}"
            self.details = traceback.format_exc()
        finally:
            self.seconds = time.monotonic() - self.started
            shutil.rmtree(self.workDir, ignore_errors=True)
            if self in _runningJobs:
                _runningJobs.remove(self)
        self._call(self.onFinished)

    def _call(self, callback) -> None:
        if callback is None:
            return
        try:
            callback(self)
        except Exception:
            log.exception("an enhancement callback failed")


class EnhanceLogic:
    """Enhance volume nodes with the mrisr backend; usable from the Python console without the GUI."""

    def __init__(self, scene=None, pythonExecutable: Optional[str] = None, tempRoot: Optional[str] = None,
                 applicationLogic=None) -> None:
        self._scene = scene
        self.pythonExecutable = pythonExecutable
        self.tempRoot = tempRoot
        self._applicationLogic = applicationLogic
        self._catalog: Optional[MethodCatalog] = None
        self.idle: Optional[Callable[[], None]] = None
        self.server: Optional[str] = None  # a `mrisr serve` URL: runs go there unless enhance(server=...) says otherwise
        self.serverToken: Optional[str] = None  # its token (else $MRISR_SERVER_TOKEN of this process)

    @property
    def scene(self):
        return self._scene if self._scene is not None else slicer.mrmlScene

    @property
    def applicationLogic(self):
        if self._applicationLogic is not None:
            return self._applicationLogic
        app = getattr(slicer, "app", None)
        return app.applicationLogic() if app is not None else None

    def python(self) -> str:
        return self.pythonExecutable or defaultPythonExecutable()

    def methodCatalog(self, refresh: bool = False) -> MethodCatalog:
        """The backend's method registry (asked once, then cached)."""
        if self._catalog is None or refresh:
            self._catalog = loadCatalog(self.python())
        return self._catalog

    def cachedCatalog(self) -> Optional[MethodCatalog]:
        """The catalog if it was already asked for (never starts the backend)."""
        return self._catalog

    def setMethodCatalog(self, catalog: Optional[MethodCatalog]) -> None:
        """Use a catalog obtained elsewhere (e.g. from dependencies.probeBackend); None forgets it."""
        self._catalog = catalog

    def enhance(self, inputNode, method: Optional[str] = None, steps: Optional[int] = None,
                startStep: Optional[int] = None, patchSize: Optional[int] = None, overlap: float = 0.25,
                targetSpacing: Optional[Sequence[float]] = None, device: str = "auto", seed: int = 0,
                batchSize: Optional[int] = None, referenceNode=None, outputNode=None, blocking: bool = True,
                onProgress: Optional[Callable[[EnhanceJob], None]] = None,
                onFinished: Optional[Callable[[EnhanceJob], None]] = None, showResults: bool = False,
                segment: bool = False, samples: int = 1, backProjection: int = 0,
                dataConsistency: Optional[int] = None, adapt: float = 0.0, sliceThickness: Optional[float] = None,
                server: Optional[str] = None, token: Optional[str] = None, preset: Optional[str] = None,
                roiNode=None):
        """Enhance `inputNode`; options left as None take the method's defaults.

        Blocking (default): returns the enhanced volume node, raises EnhanceError (or EnhanceCancelled).
        Non-blocking: returns the running EnhanceJob; `onProgress(job)` and `onFinished(job)` are called
        from `job.poll()` (in Slicer a timer polls for you). With `showResults` the comparison layout is
        shown when the run succeeds. With `segment`, brain tissue (CSF/GM/WM) of the interpolated input
        and of the output is segmented too: two segmentation nodes and an agreement table node. With
        `samples` > 1 (diffusion methods) the output is the mean of that many posterior samples and an
        uncertainty volume (their per-voxel standard deviation) is added: `logic.uncertaintyNode(out)`.
        `backProjection` > 0 back-projects the output toward the acquired slices that many times (helps on
        real thick-slice scans, hurts when the input's contrast differs from the wanted one);
        `dataConsistency` is its former name, still accepted. `adapt` > 0 first fine-tunes the method on
        the scan itself for that many seconds (methods whose registry entry allows it; `sliceThickness` in
        mm overrides the slice profile); a learned run reports its self-check (`job.selfCheck`,
        `logic.selfCheck(out)`). `server` (default `logic.server`) runs on a `mrisr serve` server with
        `token` (default `logic.serverToken`, else $MRISR_SERVER_TOKEN). `preset` ("Fast", "Balanced", "Best":
        `logic.presets()`) picks method, steps, samples and adaptation; options given explicitly win. `roiNode`
        (a markups ROI) enhances only the input's voxels inside it: much faster, for a quick look.
        """
        if dataConsistency is not None:
            backProjection = dataConsistency
        parameters = EnhanceParameters(method, steps, startStep, patchSize, overlap, targetSpacing, device, seed,
                                       batchSize, segment, samples, backProjection, adapt, sliceThickness)
        if preset is not None:
            parameters = self._withPreset(parameters, preset)
        if showResults:
            onFinished = self._showingResults(onFinished)
        job = self.start(inputNode, parameters, referenceNode, outputNode, onProgress, onFinished, server, token, roiNode)
        return job if not blocking else job.wait(idle=self.idle)

    def loadLowFieldSample(self, cacheDir: Optional[str] = None,
                           onProgress: Optional[Callable[[float, str], None]] = None):
        """The "low-field sample" (the backend's `mrisr demo` volume, made once into `cacheDir`: default the
        scene's download cache) as a volume node in the scene."""
        cacheDir = cacheDir or sampledata.defaultCacheDir(self.scene) or self.tempRoot or tempfile.gettempdir()
        path = sampledata.makeLowFieldSample(self.python(), cacheDir, self._catalog, idle=self.idle,
                                             onProgress=onProgress)
        volumesLogic = self.applicationLogic.GetModuleLogic("Volumes") if self.applicationLogic is not None else None
        if volumesLogic is None:
            raise EnhanceError("Slicer's Volumes module logic is not available to load the sample")
        return sampledata.loadLowFieldSample(volumesLogic, path)

    def presets(self) -> tuple[Preset, ...]:
        """Fast / Balanced / Best of this backend (see presets.py: from its registry, never copied)."""
        return presetsFor(self.methodCatalog())

    def _withPreset(self, parameters: EnhanceParameters, name: str) -> EnhanceParameters:
        chosen = presetNamed(self.presets(), name).parameters(parameters)
        if parameters.method is not None and parameters.method != chosen.method:
            raise EnhanceError(f"preset {name!r} uses {chosen.method}; leave out method={parameters.method!r} or the preset")
        explicit = {option: getattr(parameters, option) for option in ("steps", "startStep", "patchSize")
                    if getattr(parameters, option) is not None}
        if parameters.samples != 1:
            explicit["samples"] = parameters.samples
        if parameters.adapt:
            explicit["adapt"] = parameters.adapt
        return chosen.replace(**explicit)

    def _showingResults(self, onFinished):
        def finished(job: EnhanceJob) -> None:
            if job.state == SUCCEEDED:
                self.showComparison(job.outputNode)
            if onFinished is not None:
                onFinished(job)
        return finished

    def start(self, inputNode, parameters: EnhanceParameters, referenceNode=None, outputNode=None,
              onProgress=None, onFinished=None, server: Optional[str] = None, token: Optional[str] = None,
              roiNode=None) -> EnhanceJob:
        """Write the inputs to a temporary folder, have the backend check the run (`mrisr plan`), then
        start it (here, or as a client of the server `server`); returns the running job. A refusal raises
        EnhanceError with the backend's message; the plan's warnings are logged and kept in `job.warnings`."""
        nodeio.checkInputVolume(inputNode)
        method = self.methodCatalog().get(parameters.method)
        parameters = parameters.replace(method=method.name)
        if method.needsReference:
            nodeio.checkInputVolume(referenceNode, "reference")
        if outputNode is not None and outputNode in (inputNode, referenceNode):
            raise EnhanceError("the output volume must differ from the input and reference volumes")
        server = (server or self.server or "").strip() or None
        workDir = self._newWorkDir()
        try:
            inputPath, arguments = self._writeInputs(workDir, inputNode, referenceNode if method.needsReference else None,
                                                     parameters, method, roiNode)
            outputPath = os.path.join(workDir, "enhanced" + FILE_SUFFIX)
            plan = planRun(self.python(), inputPath, outputPath, arguments)
            plan.check()
            for warning in plan.warnings:
                log.warning("%s", warning)
            command = backendCommand(self.python()) + ["enhance", inputPath, outputPath, *arguments]
            process = (self._remoteProcess(command, server, token) if server
                       else BackendProcess(command, env=backendEnvironment(self.python())))
            process.start()
        except FileNotFoundError as exc:
            shutil.rmtree(workDir, ignore_errors=True)
            raise EnhanceError(str(exc)) from None
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        job = EnhanceJob(self, process, workDir, inputNode, outputNode, method, parameters, plan, onProgress, onFinished)
        job.server, job.roiNode = server, roiNode
        self.schedulePolling(job)
        return job

    def _remoteProcess(self, command: list[str], server: str, token: Optional[str]) -> BackendProcess:
        """The local backend as a client of `server`: the token travels in its environment, never on its
        command line, and closing its stdin (cancel, or Slicer gone) cancels the server's job."""
        env = backendEnvironment(self.python())
        token = token or self.serverToken
        if token:
            env[TOKEN_ENVIRONMENT] = token
        return BackendProcess(command + ["--server", server, "--cancel-on-stdin-close"], env=env, stdinPipe=True)

    def _newWorkDir(self) -> str:
        """A temporary folder for one run, marked with this process's id; folders of runs whose Slicer
        has died (crashed, killed) are removed first."""
        root = self.tempRoot or tempfile.gettempdir()
        removeOrphanedWorkDirs(root)
        workDir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root)
        with open(os.path.join(workDir, OWNER_FILE), "w", encoding="utf-8") as owner:
            owner.write(str(os.getpid()))
        return workDir

    def plan(self, inputNode, parameters: Optional[EnhanceParameters] = None, referenceNode=None, roiNode=None) -> RunPlan:
        """The backend's plan for enhancing `inputNode` (output grid, voxels, memory, refusals), without a run.

        Takes about a second (a backend process without torch); the panel uses it for the output spacing
        and the time estimate.
        """
        nodeio.checkInputVolume(inputNode)
        method = self.methodCatalog().get((parameters or EnhanceParameters()).method)
        parameters = (parameters or EnhanceParameters()).forMethod(method)
        workDir = self._newWorkDir()
        try:
            inputPath, arguments = self._writeInputs(workDir, inputNode, referenceNode if method.needsReference else None,
                                                     parameters, method, roiNode)
            return planRun(self.python(), inputPath, None, arguments)
        finally:
            shutil.rmtree(workDir, ignore_errors=True)

    def schedulePolling(self, job: EnhanceJob) -> None:
        """Hook for the Slicer module: poll the job from a timer. Here the caller polls or waits."""

    def _writeInputs(self, workDir: str, inputNode, referenceNode, parameters: EnhanceParameters,
                     method: MethodInfo, roiNode=None) -> tuple[str, list[str]]:
        """Write the input (cropped to the ROI, if any) and reference volume files; returns the input path and
        the run's arguments."""
        inputPath = os.path.join(workDir, "input" + FILE_SUFFIX)
        nodeio.writeVolumeFile(nodeio.croppedVolume(inputNode, roiNode) if roiNode is not None else inputNode, inputPath)
        arguments = []
        if referenceNode is not None:
            referencePath = os.path.join(workDir, "reference" + FILE_SUFFIX)
            nodeio.writeVolumeFile(referenceNode, referencePath)
            arguments += ["--reference", referencePath]
        arguments += parameters.cliArguments(method)
        arguments += ["--write-interpolated", os.path.join(workDir, INTERPOLATED_FILE + FILE_SUFFIX)]
        if parameters.samples > 1:
            arguments += ["--uncertainty", os.path.join(workDir, UNCERTAINTY_FILE + FILE_SUFFIX)]
        return inputPath, arguments

    def importResult(self, job: EnhanceJob):
        """Read the enhanced and interpolated volumes the backend wrote, make their difference, then add
        them to the scene together."""
        enhanced = nodeio.readVolumeFile(job.plan.files["output"])
        interpolated = nodeio.readVolumeFile(job.plan.files["interpolated"])
        values = diff.differenceArray(slicer.util.arrayFromVolume(enhanced), slicer.util.arrayFromVolume(interpolated))
        difference = nodeio.volumeFromArray(values, enhanced)
        window = diff.symmetricWindow(values)
        return self._addResults(job, enhanced, interpolated, difference, window)

    def _addResults(self, job: EnhanceJob, enhanced, interpolated, difference, window: float):
        scene, inputNode = self.scene, job.inputNode
        outputNode = job.requestedOutputNode
        existing = {role: nodeio.referencedNode(outputNode, role) for role in (INTERPOLATED_ROLE, DIFFERENCE_ROLE)}
        created = []
        before = nodeio.nodeIDs(scene)
        name = resultName(inputNode, job.method, job.parameters, region=job.roiNode is not None)
        try:
            outputNode = self._put(enhanced, name, outputNode, created)
            if outputNode not in created:
                outputNode.SetName(name)  # a node reused on purpose is renamed for this input and method
            interpolatedNode = self._put(interpolated, f"{inputNode.GetName()} interpolated",
                                         existing[INTERPOLATED_ROLE], created)
            differenceNode = self._put(difference, f"{outputNode.GetName()} difference", existing[DIFFERENCE_ROLE],
                                       created)
            windowLevel = nodeio.windowLevelOf(inputNode)
            diff.showAsGrey(outputNode, windowLevel)
            diff.showAsGrey(interpolatedNode, windowLevel)
            diff.showAsDifference(differenceNode, window)
            diff.addLegend(differenceNode)
            for node in (outputNode, interpolatedNode, differenceNode):
                nodeio.placeBeside(node, inputNode)
            outputNode.SetNodeReferenceID(INPUT_ROLE, inputNode.GetID())
            outputNode.SetNodeReferenceID(INTERPOLATED_ROLE, interpolatedNode.GetID())
            outputNode.SetNodeReferenceID(DIFFERENCE_ROLE, differenceNode.GetID())
            if existing[INTERPOLATED_ROLE] is not None:
                existing[INTERPOLATED_ROLE].SetName(f"{inputNode.GetName()} interpolated")
            if existing[DIFFERENCE_ROLE] is not None:
                existing[DIFFERENCE_ROLE].SetName(f"{outputNode.GetName()} difference")
            replaced = (self._addSegmentations(job, outputNode, created) if job.parameters.segment
                        else self._detach(outputNode, (INPUT_SEGMENTATION_ROLE, OUTPUT_SEGMENTATION_ROLE, TISSUE_TABLE_ROLE)))
            replaced += (self._addUncertainty(job, outputNode, created) if job.parameters.samples > 1
                         else self._detach(outputNode, (UNCERTAINTY_ROLE,)))
            self._recordProvenance(outputNode, job)
        except BaseException:
            nodeio.removeNodes(scene, reversed(created))
            nodeio.removeNodes(scene, [scene.GetNodeByID(i) for i in nodeio.nodeIDs(scene) - before])  # helpers
            raise
        nodeio.removeNodes(scene, replaced)  # a re-run into the same output replaces its segmentations
        return outputNode

    @staticmethod
    def _detach(outputNode, roles: Sequence[str]) -> list:
        """The nodes an earlier run into `outputNode` made for `roles`: removed once this run succeeded (the
        scene drops the references with them), so they are never shown as if they belonged to the new result."""
        stale = [nodeio.referencedNode(outputNode, role) for role in roles]
        return [node for node in stale if node is not None]

    def _addSegmentations(self, job: EnhanceJob, outputNode, created: list) -> list:
        """Segmentation nodes of the interpolated input and the output, and their agreement table;
        returns the segmentation nodes they replace (removed once everything succeeded)."""
        inputName = job.inputNode.GetName()
        files = job.plan.files
        report = tissues.readReport(files["report"])
        replaced = []
        for role, path, name in ((INPUT_SEGMENTATION_ROLE, files["input_seg"], f"{inputName} interpolated tissues"),
                                 (OUTPUT_SEGMENTATION_ROLE, files["output_seg"], f"{outputNode.GetName()} tissues")):
            replaced.append(nodeio.referencedNode(outputNode, role))
            node = tissues.loadSegmentation(self.scene, path, name)
            created.append(node)
            nodeio.placeBeside(node, job.inputNode)
            outputNode.SetNodeReferenceID(role, node.GetID())
        table = tissues.agreementTable(self.scene, report["input_vs_output"], f"{outputNode.GetName()} tissue agreement",
                                       nodeio.referencedNode(outputNode, TISSUE_TABLE_ROLE))
        if nodeio.referencedNode(outputNode, TISSUE_TABLE_ROLE) is None:
            created.append(table)
            nodeio.placeBeside(table, job.inputNode)
            outputNode.SetNodeReferenceID(TISSUE_TABLE_ROLE, table.GetID())
        return [node for node in replaced if node is not None]

    def _addUncertainty(self, job: EnhanceJob, outputNode, created: list) -> list:
        """The samples' standard deviation as a volume beside the output (hot colours, zero = black);
        returns the uncertainty volume of an earlier run into the same output, to be removed."""
        previous = nodeio.referencedNode(outputNode, UNCERTAINTY_ROLE)
        content = nodeio.readVolumeFile(job.plan.files["uncertainty"])
        node = nodeio.addVolumeToScene(self.scene, content, f"{outputNode.GetName()} uncertainty")
        created.append(node)
        showAsUncertainty(node, slicer.util.arrayFromVolume(node))
        nodeio.placeBeside(node, job.inputNode)
        outputNode.SetNodeReferenceID(UNCERTAINTY_ROLE, node.GetID())
        return [previous] if previous is not None else []

    def uncertaintyNode(self, outputNode):
        """The uncertainty volume (per-voxel standard deviation of the samples) of an enhanced volume, or None."""
        return nodeio.referencedNode(outputNode, UNCERTAINTY_ROLE)

    def _put(self, content, name: str, node, created: list):
        isNew = node is None
        node = nodeio.addVolumeToScene(self.scene, content, name, node)
        if isNew:
            created.append(node)
        return node

    @staticmethod
    def _recordProvenance(outputNode, job: EnhanceJob) -> None:
        settings = {k: v for k, v in vars(job.parameters).items() if v is not None}
        outputNode.SetAttribute(ATTRIBUTE_PREFIX + "Method", job.method.name)
        outputNode.SetAttribute(ATTRIBUTE_PREFIX + "Parameters", json.dumps(settings, default=list, sort_keys=True))
        outputNode.SetAttribute(ATTRIBUTE_PREFIX + "Seconds", f"{time.monotonic() - job.started:.1f}")
        outputNode.SetAttribute(ATTRIBUTE_PREFIX + "SelfCheck", job.selfCheck or None)
        outputNode.SetAttribute(ATTRIBUTE_PREFIX + "Server", job.server or None)
        outputNode.SetAttribute(ATTRIBUTE_PREFIX + "Region", job.roiNode.GetID() if job.roiNode is not None else None)

    def selfCheck(self, outputNode) -> str:
        """The backend's self-check line of the run that made `outputNode` ("" for interpolation)."""
        return outputNode.GetAttribute(ATTRIBUTE_PREFIX + "SelfCheck") or ""

    # Display

    def comparisonLayout(self) -> ComparisonLayout:
        return ComparisonLayout(self.scene, self.applicationLogic)

    def showComparison(self, outputNode) -> ComparisonLayout:
        """Show Input (B-spline-interpolated onto the output grid by the backend), Enhanced, Difference and
        Overlay views."""
        interpolated = nodeio.referencedNode(outputNode, INTERPOLATED_ROLE)
        differenceNode = nodeio.referencedNode(outputNode, DIFFERENCE_ROLE)
        if interpolated is None or differenceNode is None:
            raise EnhanceError(f"{outputNode.GetName()!r} was not made by MRISuperResolution (no difference map)")
        layout = self.comparisonLayout()
        legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(differenceNode)
        layout.show(interpolated, outputNode, differenceNode, legend=legend)
        segmentations = self.segmentationNodes(outputNode)
        if None not in segmentations:
            layout.showSegmentations(*segmentations)
        return layout

    def segmentationNodes(self, outputNode) -> tuple:
        """(input segmentation, output segmentation) of an enhanced volume; None where there is none."""
        return tuple(nodeio.referencedNode(outputNode, role) for role in (INPUT_SEGMENTATION_ROLE, OUTPUT_SEGMENTATION_ROLE))

    def tissueTable(self, outputNode):
        """The agreement table node (tissue, volumes in mL, Dice) of an enhanced volume, or None."""
        return nodeio.referencedNode(outputNode, TISSUE_TABLE_ROLE)

    def setInputSegmentationVisible(self, outputNode, visible: bool) -> None:
        """Toggle the input's segmentation in the Input view (the output's stays in Overlay)."""
        inputSegmentation, _ = self.segmentationNodes(outputNode)
        if inputSegmentation is None:
            raise EnhanceError(f"{outputNode.GetName()!r} has no tissue segmentation: enhance with segment=True")
        inputSegmentation.GetDisplayNode().SetVisibility(bool(visible))

    def setOrientation(self, orientation: str) -> None:
        self.comparisonLayout().setOrientation(orientation)

    def restorePreviousLayout(self) -> bool:
        return self.comparisonLayout().restorePreviousLayout()
