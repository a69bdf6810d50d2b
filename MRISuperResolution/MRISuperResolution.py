"""MRISuperResolution: enhance low-field / thick-slice MRI volumes with the mrisr backend.

Module, Widget, Logic and Test. The widget is Qt only; everything else lives in
MRISuperResolutionLib (importable without Qt) so that the logic is the Python-console API:

    from MRISuperResolution import MRISuperResolutionLogic
    logic = MRISuperResolutionLogic()
    out = logic.enhance(slicer.util.getNode("MRHead"), method="bspline", showResults=True)
"""

import importlib
import sys
from typing import Annotated, Optional

import ctk
import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper, parameterPack
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MRISuperResolutionLib import EnhanceError, EnhanceLogic, EnhanceParameters
from MRISuperResolutionLib import about, dependencies, estimates, sampledata, selftest
from MRISuperResolutionLib.logic import cancelRunningJobs
from MRISuperResolutionLib.parameters import panelOptions
from MRISuperResolutionLib.presets import matchingPreset, presetsFor

PYTHON_SETTING = "MRISuperResolution/PythonExecutable"
LOCATION_SETTING = "MRISuperResolution/BackendLocation"  # "local" or "server"
SERVER_URL_SETTING = "MRISuperResolution/ServerURL"  # the token is never saved
LIB_MODULES = ("about", "parameters", "process", "estimates", "presets", "dependencies", "nodeio", "difference", "layout",
               "uncertainty", "tissues", "logic", "sampledata", "selftest")
POLL_INTERVAL_MS = 100
CUSTOM_PRESET = "Custom"


class MRISuperResolution(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MRI Super-Resolution")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["MRISuperResolution developers"]
        self.parent.helpText = about.helpText()
        self.parent.acknowledgementText = about.acknowledgementText()
        slicer.app.connect("startupCompleted()", onStartupCompleted)


def onStartupCompleted() -> None:
    """Register the low-field sample and stop every running enhancement (panel or console) when the scene
    closes or Slicer quits."""
    slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, lambda caller, event: cancelRunningJobs())
    slicer.app.aboutToQuit.connect(cancelRunningJobs)
    try:
        registerSampleData()
    except ImportError:  # the Sample Data module is not loaded
        pass


def registerSampleData() -> None:
    """The "Low-field sample" of the Sample Data module: made by the backend on first click, then cached."""
    import SampleData

    cached = f"{sampledata.SAMPLE_FOLDER}/{sampledata.LOW_FIELD_FILE}"  # where downloadSample() finds it once made
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=sampledata.SAMPLE_CATEGORY, sampleName=sampledata.SAMPLE_NAME, uris=[f"mrisr-demo:{cached}"],
        fileNames=[cached], nodeNames=[sampledata.NODE_NAME], loadFileType=["VolumeFile"],
        thumbnailFileName=str(dependencies.MODULE_DIR / "Resources" / "Icons" / "MRISuperResolution.png"),
        customDownloader=lambda source: loadLowFieldSampleWithProgress())


def loadLowFieldSampleWithProgress():
    """Make (first time only) and load the low-field sample, with a progress dialog; offers to install the
    package the sample's template comes from (the backend's "eval" extra) when it is missing."""
    logic = MRISuperResolutionLogic()
    dialog = qt.QProgressDialog(slicer.util.mainWindow())
    dialog.windowTitle = _("Low-field sample")
    dialog.setLabelText(_("Making the low-field sample from the MNI152 template…"))
    dialog.setRange(0, 100)
    dialog.setCancelButton(None)
    dialog.minimumDuration = 0

    def onProgress(fraction: float, text: str) -> None:
        dialog.value = int(round(100 * fraction))
        dialog.setLabelText(_("Making the low-field sample: {step}").format(step=text))

    try:
        for attempt in range(2):
            try:
                node = logic.loadLowFieldSample(onProgress=onProgress)
                break
            except EnhanceError as exc:
                extra = sampledata.missingExtra(str(exc))
                if attempt or extra is None or not offerExtraPackages(logic, extra):
                    raise
        slicer.util.setSliceViewerLayers(background=node, fit=True)
        return node
    except EnhanceError as exc:
        slicer.util.errorDisplay(str(exc), windowTitle=_("Low-field sample"))
        return None
    finally:
        dialog.close()


def offerExtraPackages(logic, extra: str) -> bool:
    """Install a backend extra (for the sample: the package the MNI152 template comes with) after one confirmation."""
    bundled = dependencies.bundledBackend()
    packages = list(bundled.extras.get(extra, ())) if bundled is not None else []
    if not packages or dependencies.isExternalPython(logic.python()) or not slicer.util.confirmOkCancelDisplay(
            _("The low-field sample is made from the MNI152 template, which comes with {packages}. Install it into "
              "Slicer's Python now?").format(packages=", ".join(packages)), windowTitle=_("Low-field sample")):
        return False
    dependencies.installExtra(lambda args: runPipWithDialog(logic.python(), args), extra)
    return True


def runPipWithDialog(pythonExecutable, args) -> None:
    """pip install ARGS with its output shown line by line in a dialog (and in the log)."""
    dialog = qt.QDialog(slicer.util.mainWindow())
    dialog.windowTitle = _("Installing Python packages")
    layout = qt.QVBoxLayout(dialog)
    bar = qt.QProgressBar()
    bar.setRange(0, 0)
    output = qt.QPlainTextEdit()
    output.readOnly = True
    output.minimumWidth = 640
    layout.addWidget(bar)
    layout.addWidget(output)
    dialog.show()
    try:
        dependencies.runPip(pythonExecutable, args, onLine=output.appendPlainText, idle=slicer.app.processEvents)
    finally:
        dialog.close()


@parameterPack
class Spacing:
    x: Annotated[float, WithinRange(0.05, 20.0)] = 1.0
    y: Annotated[float, WithinRange(0.05, 20.0)] = 1.0
    z: Annotated[float, WithinRange(0.05, 20.0)] = 1.0


@parameterNodeWrapper
class MRISuperResolutionParameterNode:
    """The panel's state, saved with the scene. Method and device are bound by hand (their choices
    come from the backend at run time)."""

    inputVolume: vtkMRMLScalarVolumeNode
    referenceVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    roi: vtkMRMLMarkupsROINode  # optional: enhance only the input's voxels inside it
    method: str = ""
    steps: Annotated[int, WithinRange(1, 10000)] = 50
    startStep: Annotated[int, WithinRange(0, 10000)] = 0
    patchSize: Annotated[int, WithinRange(8, 1024)] = 64
    overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.25
    autoSpacing: bool = True
    targetSpacing: Spacing
    device: str = "auto"
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    # the backend's limits (mrisr methods --json) set the spin boxes' maxima; these bounds only keep
    # a saved scene sane
    samples: Annotated[int, WithinRange(1, 10000)] = 1
    backProjection: Annotated[int, WithinRange(0, 10000)] = 0
    showResults: bool = True
    segment: bool = False
    adapt: bool = False  # fine-tune on the scan first (methods whose registry entry allows it)
    adaptSeconds: Annotated[float, WithinRange(1.0, 3600.0)] = 180.0  # the backend's default replaces it


class MRISuperResolutionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._probe = None
        self._probeTimer = qt.QTimer()
        self._probeTimer.setInterval(POLL_INTERVAL_MS)
        self._probeTimer.timeout.connect(self._onProbeTick)
        self._backendStatus = None
        self._updatingFromParameterNode = False
        self._planKey = None
        self._plan = None
        self._serverInfo = None  # what Test connection found (methods, device, GPUs)
        self._lastOutput = None  # the last result, for Show comparison once the selector is back to "Create new volume"
        self._limitsApplied = False
        self._presets = ()
        self._applyingPreset = False
        self._updateDeclined = False  # the user said no to updating an outdated backend (asked once per session)
        self._failedJob = None  # the last failed job, for Show details

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISuperResolution.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MRISuperResolutionLogic()
        self.ui.pythonPathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Executable
        self.ui.pythonPathLineEdit.currentPath = qt.QSettings().value(PYTHON_SETTING, "")
        self.logic.pythonExecutable = self.ui.pythonPathLineEdit.currentPath or None

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.methodComboBox.currentIndexChanged.connect(self.onMethodSelected)
        self.ui.presetComboBox.currentIndexChanged.connect(self.onPresetSelected)
        self.ui.showDetailsButton.clicked.connect(lambda: self.onShowDetails())
        self.ui.deviceComboBox.currentIndexChanged.connect(self.onDeviceSelected)
        self.ui.enhanceButton.clicked.connect(lambda: self.onEnhanceButton())
        self.ui.showComparisonButton.clicked.connect(lambda: self.onShowComparison())
        self.ui.axialButton.clicked.connect(lambda: self.logic.setOrientation("Axial"))
        self.ui.coronalButton.clicked.connect(lambda: self.logic.setOrientation("Coronal"))
        self.ui.sagittalButton.clicked.connect(lambda: self.logic.setOrientation("Sagittal"))
        self.ui.restoreLayoutButton.clicked.connect(lambda: self.logic.restorePreviousLayout())
        self.ui.showInputSegmentationCheckBox.toggled.connect(self.onShowInputSegmentation)
        self.ui.pythonPathLineEdit.currentPathChanged.connect(self.onPythonChanged)
        self.ui.checkBackendButton.clicked.connect(lambda: self.startProbe())
        self.ui.installButton.clicked.connect(lambda: self.onInstall())
        self.ui.serverUrlLineEdit.text = qt.QSettings().value(SERVER_URL_SETTING, "")
        self.ui.backendLocationComboBox.currentIndex = 1 if qt.QSettings().value(LOCATION_SETTING, "local") == "server" else 0
        self.ui.backendLocationComboBox.currentIndexChanged.connect(lambda index: self.onBackendLocationChanged())
        self.ui.serverUrlLineEdit.editingFinished.connect(lambda: self.onBackendLocationChanged())
        self.ui.serverTokenLineEdit.editingFinished.connect(lambda: self.onBackendLocationChanged())
        self.ui.testConnectionButton.clicked.connect(lambda: self.onTestConnection())
        self.onBackendLocationChanged()
        self.initializeParameterNode()
        self.showVersionProblem()

    def cleanup(self) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
        self._probeTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        if self._backendStatus is None and self._probe is None:
            self.startProbe()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the Lib modules too (importlib, in dependency order), then the module itself."""
        for name in LIB_MODULES:
            importlib.reload(sys.modules[f"MRISuperResolutionLib.{name}"])
        importlib.reload(sys.modules["MRISuperResolutionLib"])
        ScriptedLoadableModuleWidget.onReload(self)

    # Parameter node

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[MRISuperResolutionParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.fillMethods()
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        """The parameter node changed (the GUI bindings wrote to it): update what depends on it."""
        if self._updatingFromParameterNode or self._parameterNode is None:
            return
        self._updatingFromParameterNode = True
        try:
            self.updateSpacing()
            self.updatePresetSelection()
            self.updateEstimate()
            self.updateButtons()
        finally:
            self._updatingFromParameterNode = False

    # Backend: methods and devices come from the interpreter that runs it (or from the server)

    def versionProblem(self) -> Optional[str]:
        """Why this Slicer is too old for the backend (None when it is not)."""
        return dependencies.versionProblem((slicer.app.majorVersion, slicer.app.minorVersion, slicer.app.patchVersion),
                                           sys.version_info[:3])

    def showVersionProblem(self) -> None:
        """On an older Slicer, say so at the top of the panel before anything is checked or downloaded."""
        problem = self.versionProblem()
        if problem:
            self.ui.statusLabel.text = problem
            self.ui.backendStatusLabel.text = problem
            self.ui.enhanceButton.enabled = False
            self.ui.installButton.enabled = False

    def usingServer(self) -> bool:
        return self.ui.backendLocationComboBox.currentIndex == 1

    def onBackendLocationChanged(self) -> None:
        """This computer or a server: the logic sends runs there; the URL is remembered, the token is not."""
        server = self.usingServer()
        for name in ("serverUrlLabel", "serverUrlLineEdit", "serverTokenLabel", "serverTokenLineEdit",
                     "testConnectionButton", "serverStatusLabel"):
            getattr(self.ui, name).enabled = server
        url = self.ui.serverUrlLineEdit.text.strip()
        qt.QSettings().setValue(LOCATION_SETTING, "server" if server else "local")
        qt.QSettings().setValue(SERVER_URL_SETTING, url)
        self.logic.server = url if server and url else None
        self.logic.serverToken = self.ui.serverTokenLineEdit.text or None
        if self._serverInfo is not None and (not server or self._serverInfo.url != url):
            self._serverInfo = None
            if self._backendStatus is not None and self._backendStatus.catalog is not None:
                self.logic.setMethodCatalog(self._backendStatus.catalog)
                self.fillMethods()
        if self._parameterNode is not None:
            self.onParameterNodeModified()

    def onTestConnection(self) -> None:
        """List the server's methods and GPUs (GET /v1/methods through the backend's own client)."""
        self.ui.serverStatusLabel.text = _("connecting…")
        slicer.app.processEvents()
        try:
            info = dependencies.probeServer(self.logic.python(), self.ui.serverUrlLineEdit.text,
                                            self.ui.serverTokenLineEdit.text or None)
        except EnhanceError as exc:
            self._serverInfo = None
            self.ui.serverStatusLabel.text = str(exc)
            return
        self._serverInfo = info
        self.ui.serverStatusLabel.text = info.summary()
        self.logic.setMethodCatalog(info.catalog)
        self.applyLimits(info.catalog.limits)
        self.fillMethods()
        self.fillPresets()
        if self._parameterNode is not None:
            self.onParameterNodeModified()

    def startProbe(self) -> None:
        """Ask the backend's interpreter (in the background) for its methods, torch and GPUs."""
        if self._probe is not None:
            return
        self.ui.backendStatusLabel.text = _("checking…")
        self._probe = dependencies.startProbe(self.logic.python())
        self._probeTimer.start()

    def _onProbeTick(self) -> None:
        if not self._probe.finished:
            return
        self._probeTimer.stop()
        self.setBackendStatus(dependencies.statusFromProbe(self.logic.python(), self._probe))
        self._probe = None

    def setBackendStatus(self, status) -> None:
        self._backendStatus = status
        self.ui.backendStatusLabel.text = status.summary()
        self.ui.installButton.text = _("Update backend") if status.backendOutdated else _("Install dependencies")
        if status.catalog is not None:
            self.logic.setMethodCatalog(status.catalog)
            self.applyLimits(status.catalog.limits)
        self.fillMethods()
        self.fillPresets()
        self.fillDevices()
        if self._parameterNode is not None:
            self.onParameterNodeModified()

    def onPythonChanged(self, path: str) -> None:
        qt.QSettings().setValue(PYTHON_SETTING, path)
        self.logic.pythonExecutable = path or None
        self.logic.setMethodCatalog(None)
        self._backendStatus = None
        self.startProbe()

    def applyLimits(self, limits) -> None:
        """Spin box and slider ranges from the backend's own limits (never copied into the module)."""
        ranges = limits.panelRanges()
        for option, widget in (("samples", self.ui.samplesSpinBox), ("backProjection", self.ui.backProjectionSpinBox),
                               ("overlap", self.ui.overlapSliderWidget)):
            widget.minimum, widget.maximum = ranges[option]
        if limits.adaptMaximumSeconds > 0:
            self.ui.adaptSecondsSpinBox.minimum, self.ui.adaptSecondsSpinBox.maximum = ranges["adaptSeconds"]
            if not self._limitsApplied and self._parameterNode is not None:
                self._parameterNode.adaptSeconds = limits.adaptDefaultSeconds
                self._limitsApplied = True

    def fillMethods(self) -> None:
        catalog = self.logic.cachedCatalog()
        if catalog is None or self._parameterNode is None:
            return
        combo = self.ui.methodComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for method in catalog.methods:
            combo.addItem(f"{method.name} ({method.kind})", method.name)
        chosen = self._parameterNode.method if self._parameterNode.method in catalog.names else catalog.defaultMethod
        combo.currentIndex = catalog.names.index(chosen)
        combo.blockSignals(wasBlocked)
        self.applyMethod(catalog.get(chosen), resetValues=chosen != self._parameterNode.method)

    def fillPresets(self) -> None:
        """Fast / Balanced / Best of the backend in use (presets.py), then Custom."""
        catalog = self.logic.cachedCatalog()
        self._presets = presetsFor(catalog) if catalog is not None else ()
        combo = self.ui.presetComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for preset in self._presets:
            combo.addItem(f"{preset.name}: {preset.method}", preset.name)
            combo.setItemData(combo.count - 1, f"{preset.why}; its values are shown under Advanced", qt.Qt.ToolTipRole)
        combo.addItem(_("Custom"), CUSTOM_PRESET)
        combo.blockSignals(wasBlocked)
        self.updatePresetSelection()

    def onPresetSelected(self, index: int) -> None:
        name = self.ui.presetComboBox.itemData(index)
        preset = next((p for p in self._presets if p.name == name), None)
        catalog = self.logic.cachedCatalog()
        if preset is None or catalog is None or self._parameterNode is None:
            return
        self._applyingPreset = True
        try:
            method = catalog.get(preset.method)
            combo = self.ui.methodComboBox
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = catalog.names.index(method.name)
            combo.blockSignals(wasBlocked)
            self.applyMethod(method, resetValues=True)
            node = self._parameterNode
            for option in ("steps", "startStep", "patchSize"):
                if getattr(preset, option) is not None:
                    setattr(node, option, getattr(preset, option))
            node.overlap, node.samples, node.adapt = preset.overlap, preset.samples, preset.adaptSeconds > 0
            if preset.adaptSeconds > 0:
                node.adaptSeconds = preset.adaptSeconds
        finally:
            self._applyingPreset = False
        self.onParameterNodeModified()

    def updatePresetSelection(self) -> None:
        """Show the preset the current settings are, or Custom."""
        catalog = self.logic.cachedCatalog()
        if self._applyingPreset or catalog is None or not self._presets or self._parameterNode is None:
            return
        try:
            preset = matchingPreset(self._presets, self.currentParameters(catalog), catalog)
        except EnhanceError:
            preset = None
        combo = self.ui.presetComboBox
        wasBlocked = combo.blockSignals(True)
        combo.currentIndex = max(0, combo.findData(preset.name if preset else CUSTOM_PRESET))
        combo.blockSignals(wasBlocked)

    def currentParameters(self, catalog) -> EnhanceParameters:
        """The run the panel's settings describe, with the options the chosen method lacks dropped."""
        node = self._parameterNode
        method = catalog.get(node.method or None)
        return EnhanceParameters(method.name, node.steps, node.startStep, node.patchSize, node.overlap,
                                 self.targetSpacing(), node.device, node.seed, segment=node.segment,
                                 samples=node.samples, backProjection=node.backProjection,
                                 adapt=node.adaptSeconds if node.adapt else 0.0).forMethod(method)

    def fillDevices(self) -> None:
        combo = self.ui.deviceComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for label, value in self._backendStatus.deviceChoices():
            combo.addItem(label, value)
        index = combo.findData(self._parameterNode.device if self._parameterNode else "auto")
        combo.currentIndex = max(0, index)
        combo.blockSignals(wasBlocked)

    def onMethodSelected(self, index: int) -> None:
        catalog = self.logic.cachedCatalog()
        if catalog is None or index < 0:
            return
        self.applyMethod(catalog.get(self.ui.methodComboBox.itemData(index)), resetValues=True)

    def onDeviceSelected(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index)

    def applyMethod(self, method, resetValues: bool) -> None:
        """Show the method's options only, with its ranges (and its defaults when newly chosen)."""
        self._parameterNode.method = method.name
        visible = panelOptions(method)
        rows = {"steps": ("stepsLabel", "stepsSpinBox"), "startStep": ("startStepLabel", "startStepSpinBox"),
                "patchSize": ("patchSizeLabel", "patchSizeSpinBox"), "overlap": ("overlapLabel", "overlapSliderWidget"),
                "reference": ("referenceLabel", "referenceSelector"), "samples": ("samplesLabel", "samplesSpinBox")}
        for option, widgets in rows.items():
            for name in widgets:
                getattr(self.ui, name).visible = visible[option]
        for option in ("steps", "startStep", "patchSize"):
            allowed = method.optionRange(option)
            if allowed is None:
                continue
            spinBox = getattr(self.ui, f"{option}SpinBox")
            spinBox.setRange(allowed.minimum, allowed.maximum)
            spinBox.singleStep = allowed.multipleOf
            if resetValues:
                setattr(self._parameterNode, option, allowed.default)
        self.ui.methodDescriptionLabel.text = method.description
        self.ui.adaptCheckBox.enabled = visible["adapt"]
        self.ui.adaptCheckBox.toolTip = "" if visible["adapt"] else _("{method} cannot adapt to the scan.").format(
            method=method.name)

    def currentPlan(self):
        """The backend's plan (`mrisr plan`) for the chosen input, method and spacing; asked again only
        when one of them changes. None without an input or a backend."""
        catalog = self.logic.cachedCatalog()
        node = self._parameterNode
        inputNode = node.inputVolume
        if catalog is None or inputNode is None or inputNode.GetImageData() is None or node.method not in catalog.names:
            return None
        roi = node.roi
        key = (inputNode.GetID(), inputNode.GetImageData().GetMTime(), inputNode.GetMTime(), node.method,
               self.targetSpacing(), roi.GetID() if roi else None, roi.GetMTime() if roi else None)
        if key != self._planKey:
            self._planKey = key
            try:
                self._plan = self.logic.plan(inputNode, EnhanceParameters(node.method, targetSpacing=self.targetSpacing()),
                                             roiNode=roi)
            except EnhanceError:
                self._plan = None
        return self._plan

    def updateSpacing(self) -> None:
        """With automatic spacing, show the backend's default output spacing (from its plan) and lock it."""
        auto = self._parameterNode.autoSpacing
        self.ui.targetSpacingWidget.enabled = not auto
        plan = self.currentPlan() if auto else None
        if plan is not None and plan.outputSpacing is not None:
            x, y, z = plan.outputSpacing
            current = self._parameterNode.targetSpacing
            if (current.x, current.y, current.z) != (x, y, z):
                self._parameterNode.targetSpacing = Spacing(x=x, y=y, z=z)

    def targetSpacing(self):
        spacing = self._parameterNode.targetSpacing
        return None if self._parameterNode.autoSpacing else (spacing.x, spacing.y, spacing.z)

    def updateEstimate(self) -> None:
        """Expected time (the server's device when a server is used; adaptation included) and the plan's
        training-range warnings, which do not block the run."""
        plan = self.currentPlan()
        self.ui.warningsLabel.text = "\n".join(f"⚠ {warning}" for warning in plan.warnings) if plan else ""
        self.ui.warningsLabel.visible = bool(plan and plan.warnings)
        if plan is None or plan.outputVoxels is None:
            self.ui.timeEstimateLabel.text = "; ".join(plan.errors) if plan is not None else ""
            return
        node = self._parameterNode
        method = self.logic.cachedCatalog().get(node.method)
        steps = node.steps if method.steps is not None else None
        samples = node.samples if method.kind == "diffusion" else 1
        adaptSeconds = node.adaptSeconds if node.adapt and method.adapts else 0.0
        serverDevice = self._serverInfo.device if self.usingServer() and self._serverInfo is not None else None
        self.ui.timeEstimateLabel.text = estimates.describeEstimate(method, plan.outputVoxels, steps, samples,
                                                                    adaptSeconds, serverDevice)

    # Run

    def updateButtons(self) -> None:
        running = self._job is not None and self._job.running
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.enhanceButton.text = _("Cancel") if running else _("Enhance")
        self.ui.enhanceButton.enabled = running or ready
        self.ui.enhanceButton.toolTip = (_("Stop the backend; the scene stays as it was.") if running else
                                         _("Enhance the input volume.") if ready else _("Select an input volume first."))
        self.ui.progressBar.visible = running
        for name in ("inputsCollapsibleButton", "methodCollapsibleButton", "advancedCollapsibleButton"):
            getattr(self.ui, name).enabled = not running

    def onEnhanceButton(self) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Enhancement could not start."), waitCursor=True):
            if not self.ensureBackend():
                return
            node = self._parameterNode
            parameters = self.currentParameters(self.logic.methodCatalog())
            if self.usingServer() and not self.logic.server:
                raise EnhanceError(_("Enter the server's URL under Advanced, or choose This computer."))
            self._job = self.logic.start(node.inputVolume, parameters, node.referenceVolume, node.outputVolume,
                                         onProgress=self.onJobProgress, onFinished=self.onJobFinished,
                                         roiNode=node.roi)
            self.ui.progressBar.value = 0
            self.ui.showDetailsButton.visible = False
            self.ui.statusLabel.text = "\n".join([self._job.statusText(), *(f"⚠ {w}" for w in self._job.warnings)])
            self.updateButtons()

    def onJobProgress(self, job) -> None:
        self.ui.progressBar.value = int(round(100 * job.fraction))
        self.ui.statusLabel.text = job.statusText()

    def onJobFinished(self, job) -> None:
        self.ui.statusLabel.text = job.statusText()
        self.updateButtons()
        if job.state == "succeeded":
            parameterNode = self.logic.getParameterNode()  # the panel may have been left meanwhile
            parameterNode.outputVolume = None  # back to "Create new volume": the next run never overwrites this one
            self._lastOutput = job.outputNode
            if parameterNode.showResults:
                self.logic.showComparison(job.outputNode)
            self.showTissueTable(job.outputNode)
        elif job.state == "failed":
            self._failedJob = job
            self.ui.showDetailsButton.visible = bool(job.details)
            slicer.util.errorDisplay(_("Enhancement failed: {message}").format(message=job.errorMessage),
                                     detailedText=job.details)

    def onShowDetails(self) -> None:
        """Everything the backend wrote about the last failure (also in the log)."""
        job = self._failedJob
        if job is not None:
            slicer.util.errorDisplay(_("Enhancement failed: {message}").format(message=job.errorMessage),
                                     detailedText=job.details, windowTitle=_("Enhancement failed"))

    def ensureBackend(self) -> bool:
        """True when the backend can run; offers to install it into Slicer's Python once, never silently.
        An older Slicer is refused first, before anything is checked or downloaded."""
        problem = self.versionProblem()
        if problem:
            raise EnhanceError(problem)
        if self._backendStatus is None or not self._backendStatus.ready:
            self.setBackendStatus(dependencies.probeBackend(self.logic.python()))
        if self._backendStatus.ready:
            if self._backendStatus.backendOutdated and not self._updateDeclined and not self.logic.pythonExecutable:
                self.offerBackendUpdate()
            return self._backendStatus.ready
        if self.logic.pythonExecutable:
            raise EnhanceError(_("The configured Python cannot run the backend: {problems}").format(
                problems=self._backendStatus.summary()))
        return self.onInstall()

    def offerBackendUpdate(self) -> None:
        """The installed backend is not the one this module ships: reinstall it after one confirmation."""
        status = self._backendStatus
        if not slicer.util.confirmOkCancelDisplay(
                _("The installed backend is mrisr {installed}; this version of the module ships {bundled}. Update it "
                  "now? (About a minute; PyTorch is kept.)").format(installed=status.mrisrVersion,
                                                                   bundled=status.bundled.version),
                windowTitle=_("Update backend")):
            self._updateDeclined = True
            return
        with slicer.util.tryWithErrorDisplay(_("The update failed."), waitCursor=True):
            self.logic.installDependencies(pipInstall=self.pipInstallWithDialog, reinstall=True)
        self.setBackendStatus(dependencies.probeBackend(self.logic.python()))

    def pipInstallWithDialog(self, args) -> None:
        runPipWithDialog(self.logic.python(), args)

    def onInstall(self) -> bool:
        if self._backendStatus is not None and self._backendStatus.backendOutdated:
            self.offerBackendUpdate()
            return self._backendStatus.ready
        if not slicer.util.confirmOkCancelDisplay(
                _("MRISuperResolution needs PyTorch (installed by the PyTorch extension) and its mrisr backend "
                  "in Slicer's Python. Download and install them now? This takes a few minutes."),
                windowTitle=_("Install dependencies")):
            return False
        with slicer.util.tryWithErrorDisplay(_("Installation failed."), waitCursor=True):
            self.logic.installDependencies(pipInstall=self.pipInstallWithDialog)
        self.setBackendStatus(dependencies.probeBackend(self.logic.python()))
        return self._backendStatus.ready

    def onShowComparison(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot show the comparison."), waitCursor=True):
            outputNode = self._parameterNode.outputVolume or self.currentResult()
            if outputNode is None:
                raise EnhanceError(_("Enhance a volume first (or select an enhanced volume as output)."))
            self.logic.showComparison(outputNode)
            self.showTissueTable(outputNode)

    def showTissueTable(self, outputNode) -> None:
        """Show the output's tissue agreement table (volumes, Dice) in the panel, if it has one."""
        table = self.logic.tissueTable(outputNode)
        self.ui.tissueTableView.setMRMLTableNode(table)
        self.ui.tissueTableView.visible = table is not None
        if table is not None:
            self.logic.setInputSegmentationVisible(outputNode, self.ui.showInputSegmentationCheckBox.checked)

    def currentResult(self):
        """The last result shown, if it is still in the scene."""
        node = self._lastOutput
        return node if node is not None and node.GetScene() is slicer.mrmlScene else None

    def onShowInputSegmentation(self, visible: bool) -> None:
        outputNode = (self._parameterNode.outputVolume if self._parameterNode else None) or self.currentResult()
        if outputNode is not None and self.logic.tissueTable(outputNode) is not None:
            self.logic.setInputSegmentationVisible(outputNode, visible)


class MRISuperResolutionLogic(ScriptedLoadableModuleLogic, EnhanceLogic):
    """The module logic and Python-console API (see EnhanceLogic.enhance). In Slicer a Qt timer polls
    running jobs, so `enhance(..., blocking=False)` returns at once and calls back on the main thread."""

    def __init__(self, pythonExecutable: Optional[str] = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        EnhanceLogic.__init__(self, pythonExecutable=pythonExecutable or qt.QSettings().value(PYTHON_SETTING, "") or None,
                              tempRoot=slicer.app.temporaryPath)
        self.idle = slicer.app.processEvents
        self._timers = {}

    def getParameterNode(self):
        return MRISuperResolutionParameterNode(super().getParameterNode())

    def schedulePolling(self, job) -> None:
        timer = qt.QTimer()
        timer.setInterval(POLL_INTERVAL_MS)

        def tick():
            if not job.poll():
                timer.stop()
                self._timers.pop(id(job), None)

        timer.timeout.connect(tick)
        self._timers[id(job)] = timer
        timer.start()

    def installDependencies(self, pipInstall=None, reinstall: bool = False) -> None:
        """PyTorch through the PyTorch extension (installed, or updated when older than the bundled backend
        needs), then the backend and its requirements with pip (`pipInstall`, default slicer.util.pip_install);
        `reinstall` replaces an installed backend of another version."""
        bundled = dependencies.bundledBackend()
        requirement = bundled.torchRequirement if bundled is not None else None

        def installTorch():
            status = dependencies.probeBackend(self.python())
            if status.torchVersion is not None and status.torchProblem is None:
                return
            try:
                import PyTorchUtils
            except ImportError:
                raise EnhanceError(_("Install the PyTorch extension from the Extensions Manager, then restart Slicer.")) from None
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                              torchVersionRequirement=requirement) is None:
                raise EnhanceError(_("PyTorch was not installed."))

        dependencies.installBackend(pipInstall or slicer.util.pip_install, installTorch,
                                    slicerVersion=(slicer.app.majorVersion, slicer.app.minorVersion), reinstall=reinstall)


class MRISuperResolutionTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload and Test, or ctest): MRISuperResolutionLib.selftest, which checks the difference
    map and the layout always, B-spline through the backend when it is installed and a learned method when
    torch is there too, and says what it skipped. Testing/slicer runs the same on slicer-core."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SelfTest()

    def test_SelfTest(self):
        self.delayDisplay("Starting the self-test")
        report = selftest.runSelfTest(MRISuperResolutionLogic(), say=self.delayDisplay)
        self.assertIn("difference map", report.ran)
        self.assertIn("layout", report.ran)
        self.delayDisplay(f"Test passed ({report.summary()})")
