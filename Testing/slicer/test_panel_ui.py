"""The panel (.ui) loads offscreen with PySide6, and the module code only uses widgets that exist.

STAND-INS: the CTK and qMRML widgets the panel uses (ctkCollapsibleButton, ctkPathLineEdit,
ctkSliderWidget, qMRMLNodeComboBox, qMRMLTableView, qMRMLWidget) exist only inside Slicer. Here they are plain Qt
widgets registered under those class names, with the properties the .ui sets. So this test checks
the panel's structure, names, labels, properties and parameter bindings, not the behaviour of the
real CTK/qMRML widgets.
"""

from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET

import pytest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "MRISuperResolution"
ARTIFACTS = REPO / "artifacts"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtCore = pytest.importorskip("PySide6.QtCore", reason="PySide6 is not installed (pip install PySide6-Essentials)")
QtWidgets = pytest.importorskip("PySide6.QtWidgets")
QtUiTools = pytest.importorskip("PySide6.QtUiTools")

UI_FILE = MODULE_DIR / "Resources" / "UI" / "MRISuperResolution.ui"
MODULE_FILE = MODULE_DIR / "MRISuperResolution.py"
MANUALLY_BOUND = {"method", "device"}  # choices come from the backend at run time, bound in code
WIDGET_NAME = re.compile(r"^[a-z]\w*(Label|SpinBox|SliderWidget|Selector|CollapsibleButton|Button|ComboBox|CheckBox|"
                         r"Widget|LineEdit|ProgressBar)$")

# parameterNodeWrapper connectors match exact widget classes (type(widget) == ...): the bound
# widget must be of the class the parameter type maps to.
CONNECTOR_CLASSES = {"int": {"QSpinBox", "QSlider"}, "float": {"QDoubleSpinBox", "ctkSliderWidget"},
                     "bool": {"QCheckBox"}, "str": {"QLineEdit"}, "vtkMRMLScalarVolumeNode": {"qMRMLNodeComboBox"},
                     "vtkMRMLMarkupsROINode": {"qMRMLNodeComboBox"}}


def _property(name: str, default):
    store = f"_standin_{name}"
    kind = "QStringList" if isinstance(default, list) else type(default)
    return QtCore.Property(kind, lambda self: getattr(self, store, default), lambda self, value: setattr(self, store, value))


def stand_in(name: str, base, **properties):
    """A Qt class named like a Slicer widget, with the given Qt properties."""
    attrs = {key: _property(key, default) for key, default in properties.items()}
    if name == "qMRMLWidget":
        attrs["mrmlSceneChanged"] = QtCore.Signal(object)
    return type(name, (base,), attrs)


STAND_INS = [
    stand_in("qMRMLWidget", QtWidgets.QWidget),
    stand_in("ctkCollapsibleButton", QtWidgets.QWidget, text="", collapsed=False),
    stand_in("ctkPathLineEdit", QtWidgets.QWidget, currentPath=""),
    stand_in("ctkSliderWidget", QtWidgets.QWidget, decimals=2, singleStep=1.0, minimum=0.0, maximum=1.0, value=0.0),
    stand_in("qMRMLNodeComboBox", QtWidgets.QComboBox, nodeTypes=[], showChildNodeTypes=True, noneEnabled=False,
             addEnabled=True, removeEnabled=True, renameEnabled=False, noneDisplay=""),
    stand_in("qMRMLTableView", QtWidgets.QTableView),
]


@pytest.fixture(scope="module")
def panel():
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    messages = []
    previous = QtCore.qInstallMessageHandler(lambda kind, context, text: messages.append(text))
    loader = QtUiTools.QUiLoader()
    for cls in STAND_INS:
        loader.registerCustomWidget(cls)
    handle = QtCore.QFile(str(UI_FILE))
    assert handle.open(QtCore.QIODevice.ReadOnly)
    widget = loader.load(handle)
    handle.close()
    QtCore.qInstallMessageHandler(previous)
    assert widget is not None, loader.errorString()
    yield widget, messages
    widget.deleteLater()
    app.processEvents()


def ui_tree():
    return ET.parse(UI_FILE).getroot()


def ui_widgets() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ui_tree().iter("widget")}


def parameter_bindings() -> dict[str, str]:
    """SlicerParameterName → widget class, from the .ui."""
    bindings = {}
    for widget in ui_tree().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bindings[prop.find("string").text] = widget.get("class")
    return bindings


def wrapper_fields() -> dict[str, str]:
    """Parameter names of the module's parameterNodeWrapper (packs expanded to dotted names) → type name."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}

    def annotations(cls):
        for item in cls.body:
            if isinstance(item, ast.AnnAssign):
                annotation = item.annotation
                if isinstance(annotation, ast.Subscript):  # Annotated[int, WithinRange(...)]
                    annotation = annotation.slice.elts[0]
                yield item.target.id, ast.unparse(annotation)

    fields = {}
    for name, kind in annotations(classes["MRISuperResolutionParameterNode"]):
        if kind in classes:
            fields.update({f"{name}.{sub}": subkind for sub, subkind in annotations(classes[kind])})
        else:
            fields[name] = kind
    return fields


def test_ui_loads_offscreen_with_stand_ins(panel):
    widget, messages = panel
    assert widget.objectName() == "MRISuperResolution"
    assert type(widget).__name__ == "qMRMLWidget"
    for name in ("inputSelector", "methodComboBox", "enhanceButton", "progressBar", "statusLabel"):
        assert widget.findChild(QtCore.QObject, name) is not None, name
    # The stand-ins cannot declare vtkMRMLScene* signals/slots, so only those connections may be reported
    # (they are checked structurally below); no unknown class or property.
    unexpected = [m for m in messages if not m.startswith("QObject::connect")]
    assert unexpected == []
    assert sum("mrmlSceneChanged(vtkMRMLScene*)" in m for m in messages) == 4
    assert widget.findChild(QtCore.QObject, "outputSelector").property("noneDisplay") == "Create new volume"
    assert widget.findChild(QtCore.QObject, "overlapSliderWidget").property("value") == pytest.approx(0.25)
    assert widget.findChild(QtCore.QObject, "enhanceButton").text() == "Enhance"
    widget.resize(420, 900)
    ARTIFACTS.mkdir(exist_ok=True)
    assert widget.grab().save(str(ARTIFACTS / "panel_with_stand_ins.png"))


def test_every_widget_the_module_uses_exists_in_the_ui():
    source = MODULE_FILE.read_text(encoding="utf-8")
    tree = ast.parse(source)
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    named = {node.value for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and WIDGET_NAME.match(node.value)}
    formatted = {f"{option}SpinBox" for option in ("steps", "startStep", "patchSize")}  # getattr(self.ui, f"{option}SpinBox")
    assert len(used) > 10  # the AST walk does find the references
    missing = (used | named | formatted) - set(ui_widgets())
    assert missing == set()


def test_parameter_bindings_match_the_parameter_node_wrapper():
    bindings, fields = parameter_bindings(), wrapper_fields()
    assert set(bindings) <= set(fields), set(bindings) - set(fields)
    assert set(fields) - set(bindings) == MANUALLY_BOUND
    for parameter, widgetClass in bindings.items():
        assert widgetClass in CONNECTOR_CLASSES[fields[parameter]], (parameter, widgetClass)


def test_ui_connections_and_custom_widgets_are_consistent():
    root, widgets = ui_tree(), ui_widgets()
    for connection in root.iter("connection"):
        assert connection.find("sender").text in widgets and connection.find("receiver").text in widgets
    declared = {c.find("class").text for c in root.iter("customwidget")}
    used_custom = {cls for cls in widgets.values() if not cls.startswith("Q")}
    assert used_custom == declared == {cls.__name__ for cls in STAND_INS}
    node_combos = [w for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"]
    assert {w.get("name") for w in node_combos} == {"inputSelector", "referenceSelector", "outputSelector", "roiSelector"}
    receivers = {c.find("receiver").text for c in root.iter("connection")}
    assert receivers == {w.get("name") for w in node_combos}  # each gets the scene from the panel


def ancestors(name: str) -> list[str]:
    """Names of the widgets that contain widget `name`, innermost first."""
    root = ui_tree()
    parents = {child: parent for parent in root.iter() for child in parent}
    node = next(w for w in root.iter("widget") if w.get("name") == name)
    names = []
    while node in parents:
        node = parents[node]
        if node.tag == "widget":
            names.append(node.get("name"))
    return names


def document_order() -> list[str]:
    return [w.get("name") for w in ui_tree().iter("widget")]


def test_first_use_shows_the_backend_status_at_the_top_and_the_tuning_under_advanced():
    order = document_order()
    for name in ("backendStatusLabel", "checkBackendButton", "installButton"):
        assert "advancedCollapsibleButton" not in ancestors(name), name  # visible without opening Advanced
        assert order.index(name) < order.index("inputsCollapsibleButton"), name  # above everything else
    advanced = ui_tree().find(".//widget[@name='advancedCollapsibleButton']")
    assert advanced.find("property[@name='collapsed']/bool").text == "true"
    for name in ("stepsSpinBox", "startStepSpinBox", "patchSizeSpinBox", "overlapSliderWidget", "seedSpinBox",
                 "deviceComboBox", "pythonPathLineEdit"):
        assert "advancedCollapsibleButton" in ancestors(name), name
    assert ancestors("presetComboBox")[0] == "methodCollapsibleButton"
    method_rows = {item.find("widget").get("name"): int(item.get("row"))
                   for item in ui_tree().find(".//layout[@name='methodFormLayout']").findall("item")}
    assert method_rows["presetComboBox"] == 0 == min(method_rows.values())
    assert order.index("showDetailsButton") == order.index("statusLabel") + 1
    details = ui_tree().find(".//widget[@name='showDetailsButton']")
    assert details.find("property[@name='visible']/bool").text == "false"  # shown only after a failure
