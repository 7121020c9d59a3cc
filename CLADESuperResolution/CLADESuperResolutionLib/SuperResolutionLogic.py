"""Super-resolving volume nodes: in-process (scripts, batch) or in a worker process (GUI).

Both paths hand the work to the core's one pipeline (``CLADE.pipeline``): in-process through
``CLADE.pipeline.run``, in the worker through ``python -m CLADE super-resolve ... --progress json``
(which calls the same function). Both follow the same rules:

* the input node is only read (its voxels are copied out, its matrix is never touched);
* the result lands in the output node given, or in a new node named after the input, created
  only once the result exists, so a failed or cancelled run leaves no half-made node;
* the output keeps the input's parent transform, so it overlays the input wherever it is.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import CoreLocator
from .ErrorMapDisplay import errorMapNodeOf, storeErrorMap, unitsLabel
from .InputValidation import validateInputVolume
from .VolumeConversion import imageFromVolumeNode, updateVolumeNodeFromImage
from .WorkerProcess import PollingJob, WorkerProcess

#: Suffix of the default output node name.
OUTPUT_SUFFIX = "_CLADE"

#: Choices of the Advanced section (values are the core's names, ``auto`` = the model's default).
TILINGS = ("auto", "slices", "patches")
ENSEMBLES = ("auto", "none", "flips2", "flips")
PRECISIONS = ("auto", "float32", "bfloat16")
#: The adaptation spin box's "auto" (its special value text): the core's ``--adapt auto``.
ADAPT_AUTO = -1

#: Pipeline stages (``CLADE.pipeline.PipelineProgress.stage``) as shown on the progress bar.
STAGE_LABELS = {
    "resample": "Resampling",
    "adapt": "Adapting to the volume",
    "infer": "Super-resolving",
    "write": "Writing",
}


@dataclass
class SuperResolutionOptions:
    """What the user chose; None / ``auto`` mean "the model's / core's default"."""

    model: str = "mri"
    stride: int | None = None
    plane: str = "auto"
    device: str = "auto"
    batchSize: int | None = None
    thickAxis: int | None = None
    #: Steps of adaptation to the input volume before super-resolving it: ADAPT_AUTO (-1, the
    #: core decides from the volume and device), 0 (none) or a number of steps.
    adaptSteps: int = ADAPT_AUTO
    tiling: str = "auto"
    ensemble: str = "auto"
    precision: str = "auto"
    #: Also estimate the error map (``CLADE.error_map``), shown over the result.
    errorMap: bool = False

    def commandArguments(self) -> list[str]:
        """Options of ``clade super-resolve`` (after INPUT OUTPUT).

        Example:
            >>> SuperResolutionOptions(model="ct", tiling="patches", stride=8).commandArguments()
            ['--model', 'ct', '--plane', 'auto', '--device', 'auto', '--tiling', 'patches', \
'--ensemble', 'auto', '--precision', 'auto', '--stride', '8', '--adapt', 'auto']
        """
        arguments = [
            "--model",
            str(self.model),
            "--plane",
            self.plane,
            "--device",
            self.device,
            "--tiling",
            self.tiling,
            "--ensemble",
            self.ensemble,
            "--precision",
            self.precision,
        ]
        if self.usesStride():
            arguments += ["--stride", str(int(self.stride))]
        if self.batchSize:
            arguments += ["--batch-size", str(int(self.batchSize))]
        if self.thickAxis is not None:
            arguments += ["--thick-axis", str(int(self.thickAxis))]
        arguments += ["--adapt", str(self.adaptValue())]
        return arguments

    def adaptValue(self):
        """``auto`` or the number of steps, as the core's ``adapt_steps`` takes it."""
        return (
            "auto" if self.adaptSteps is None or int(self.adaptSteps) < 0 else int(self.adaptSteps)
        )

    def usesStride(self) -> bool:
        """A stride is passed unless tiling is whole slices (which have none); with ``auto``
        tiling the core takes a stride as a request for patches."""
        return bool(self.stride) and self.tiling != "slices"

    def request(self):
        """The same choices as a ``CLADE.pipeline.SuperResolutionRequest`` (imports the core)."""
        from CLADE.pipeline import SuperResolutionRequest

        return SuperResolutionRequest(
            model=self.model,
            tiling=self.tiling,
            stride=int(self.stride) if self.usesStride() else None,
            ensemble=self.ensemble,
            precision=self.precision,
            plane=self.plane,
            thick_axis=self.thickAxis,
            device=self.device,
            batch_size=self.batchSize or None,
            adapt_steps=self.adaptValue(),
            error_map=bool(self.errorMap),
        )


def defaultOutputName(inputNode) -> str:
    """``<input name>_CLADE``, made unique in the scene."""
    return inputNode.GetScene().GenerateUniqueName(inputNode.GetName() + OUTPUT_SUFFIX)


def placeBeside(node, inputNode) -> None:
    """Put ``node`` in the subject-hierarchy folder of ``inputNode`` (its patient or study), as
    Slicer's CLI modules do for an output with ``reference`` set to the input."""
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(inputNode.GetScene())
    inputItem = hierarchy.GetItemByDataNode(inputNode) if hierarchy else 0
    if not inputItem:
        return  # the input is in no hierarchy (a script outside Slicer's application)
    parent = hierarchy.GetItemParent(inputItem)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def storeResult(image, inputNode, outputNode=None, name: str | None = None):
    """Put ``image`` into ``outputNode``, or into a new node named after ``inputNode`` (unique
    in the scene, beside the input in the subject hierarchy); return the node."""
    scene = inputNode.GetScene()
    if outputNode is None:
        outputNode = scene.AddNewNodeByClass(
            "vtkMRMLScalarVolumeNode", name or defaultOutputName(inputNode)
        )
        placeBeside(outputNode, inputNode)
    if outputNode is inputNode:
        raise ValueError("The output volume must differ from the input volume, which is kept.")
    updateVolumeNodeFromImage(outputNode, image)
    outputNode.SetAndObserveTransformNodeID(inputNode.GetTransformNodeID())
    if outputNode.GetDisplayNode() is None:
        outputNode.CreateDefaultDisplayNodes()
    inputDisplay = inputNode.GetDisplayNode()
    outputDisplay = outputNode.GetDisplayNode()
    if inputDisplay is not None and outputDisplay is not None:
        # The intensities keep the input's units, so its colour map and window fit the output.
        if inputDisplay.GetColorNodeID():
            outputDisplay.SetAndObserveColorNodeID(inputDisplay.GetColorNodeID())
        if not inputDisplay.GetAutoWindowLevel():
            outputDisplay.SetAutoWindowLevel(False)
            outputDisplay.SetWindowLevel(inputDisplay.GetWindow(), inputDisplay.GetLevel())
    return outputNode


def checkInput(inputNode) -> None:
    """Raise ValueError with the validator's sentence unless ``inputNode`` can be processed."""
    ok, why = validateInputVolume(inputNode)
    if not ok:
        raise ValueError(why)


def superResolveInProcess(
    inputNode, options: SuperResolutionOptions, outputNode=None, progress=None, cancel=None
):
    """Run ``CLADE.pipeline.run`` in this process; return ``(outputNode, result)``. Blocks.

    ``progress(info)`` receives ``CLADE.pipeline.PipelineProgress`` values and ``cancel() ->
    bool`` is polled by the pipeline (``CLADE.errors.Cancelled`` is raised, no node is made).
    """
    checkInput(inputNode)
    CoreLocator.ensureCoreImportable()
    from CLADE.pipeline import run

    result = run(
        imageFromVolumeNode(inputNode), options.request(), progress=progress, cancel=cancel
    )
    outputNode = storeResult(result.image, inputNode, outputNode)
    if result.error_map is not None:  # found with ErrorMapDisplay.errorMapNodeOf(outputNode)
        storeErrorMap(result.error_map, outputNode, inputNode, _units(inputNode, result.stats))
    return outputNode, result


def _units(inputNode, stats: dict) -> str:
    """The map's units label: the input's own, HU for a CT model (the run's stats say which)."""
    return unitsLabel(inputNode, (stats.get("error_map") or {}).get("modality"))


def pythonExecutable() -> str:
    """The Python to run workers with: ``PythonSlicer`` inside Slicer, else this interpreter.

    Inside Slicer ``sys.executable`` is the application itself, not a plain Python, and
    ``PythonSlicer`` (next to it, or on ``PATH`` set by Slicer's launcher) is the interpreter
    with Slicer's packages and environment.
    """
    name = "PythonSlicer.exe" if sys.platform == "win32" else "PythonSlicer"
    found = shutil.which(name)
    if found:
        return found
    sibling = Path(sys.executable).with_name(name)
    if sibling.is_file():
        return str(sibling)
    return sys.executable


class SuperResolutionJob(PollingJob):
    """One ``clade super-resolve`` run in a worker process, polled from the main thread.

    The worker is ``PythonSlicer -m CLADE super-resolve IN OUT ... --progress json``, which
    prints one JSON object per line on stdout (``progress``, ``log``, ``done``, ``error``; see
    ``CLADE/cli/super_resolve.py``). Typical use (the widget calls :meth:`poll` from a QTimer)::

        job = SuperResolutionJob(inputNode, SuperResolutionOptions(model="mri"))
        job.start()
        while not job.done:
            for event in job.poll(): ...   # job.stage, job.fraction, job.logLines follow
        job.outputNode  # set when job.state == "succeeded"; job.errorMessage otherwise

    ``launcher`` replaces ``[python, "-m", "CLADE"]`` (tests run stand-in workers with it).
    """

    pollInterval = 0.05
    workerName = "super-resolution worker"

    def __init__(
        self,
        inputNode,
        options: SuperResolutionOptions,
        outputNode=None,
        outputName: str | None = None,
        python: str | None = None,
        launcher=None,
        tempRoot=None,
        observeScene: bool = True,
    ):
        checkInput(inputNode)
        if outputNode is not None and outputNode is inputNode:
            raise ValueError("The output volume must differ from the input volume, which is kept.")
        self.inputNode = inputNode
        self.options = options
        self.outputNode = outputNode
        self.outputName = outputName
        self.python = python or pythonExecutable()
        self.launcher = list(launcher) if launcher else [self.python, "-m", "CLADE"]
        self.tempRoot = tempRoot
        self._resetJob(observeScene)
        #: Overall fraction done (0-1, across every stage), seconds left (None: unknown).
        self.fraction = 0.0
        self.etaSeconds = None
        #: Pipeline stage the worker is in ("resample", "adapt", "infer", "write"), "" at first.
        self.stage = ""
        #: Lines for the panel's log pane (the worker's log and error messages).
        self.logLines = []
        self.stats = {}
        self.summary = ""
        self.outputPath = None
        #: The error map node (``options.errorMap``), set with the output node.
        self.errorMapNode = None

    @property
    def stageLabel(self) -> str:
        """The stage in words, for the progress bar ("" before the first progress line)."""
        return STAGE_LABELS.get(self.stage, self.stage.capitalize())

    def command(self, inputPath, outputPath) -> list[str]:
        mapArguments = []
        if self.options.errorMap:
            mapArguments = ["--error-map", str(self.errorMapPath(outputPath))]
        return [
            *self.launcher,
            "super-resolve",
            str(inputPath),
            str(outputPath),
            *self.options.commandArguments(),
            *mapArguments,
            "--progress",
            "json",
        ]

    @staticmethod
    def errorMapPath(outputPath) -> Path:
        """Where the worker writes the error map: beside the output."""
        return Path(outputPath).with_name("error_map.nrrd")

    def start(self) -> None:
        """Export the input to a temporary file and start the worker.

        Raises (and leaves no temporary folder) when the worker cannot be started; the job's
        state then stays None, never RUNNING.
        """
        import SimpleITK as sitk

        self.tempDir = Path(tempfile.mkdtemp(prefix="CLADE-", dir=self.tempRoot))
        inputPath = self.tempDir / "input.nrrd"
        self.outputPath = self.tempDir / "output.nrrd"
        try:
            # Uncompressed: written and read back at once, compression would only cost time.
            sitk.WriteImage(imageFromVolumeNode(self.inputNode), str(inputPath), False)
            self.worker = WorkerProcess(
                self.command(inputPath, self.outputPath), env=CoreLocator.workerEnvironment()
            )
            self.worker.start()
        except Exception:
            self._releaseJob()
            raise
        self.state = self.RUNNING
        self._observeSceneClose(self.inputNode)

    def _onEvent(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.fraction = float(event.get("fraction", self.fraction))
            self.etaSeconds = event.get("eta_seconds")
            self.stage = str(event.get("stage", self.stage))
        elif kind == "log" and "message" in event:
            # Protocol log lines; plain stderr text (stream "stderr") is kept by the
            # worker for failure reports instead of flooding the pane.
            level = str(event.get("level", "info"))
            prefix = "" if level == "info" else f"{level.capitalize()}: "
            self.logLines.append(prefix + str(event["message"]))
        elif kind == "done":
            self.stats = dict(event.get("stats") or {})
            self.summary = str(event.get("summary", ""))
        elif kind == "error":
            self.errorMessage = str(event.get("message", ""))
            self.logLines.append("Error: " + self.errorMessage)

    def _finish(self, cancelled: bool, returnCode: int | None = None) -> None:
        try:
            if cancelled:
                self.state = self.CANCELLED
                self.errorMessage = "Cancelled: no output was created."
            elif returnCode == 0 and self.outputPath.is_file():
                self._loadOutput()
                self.fraction = 1.0
                self.state = self.SUCCEEDED
            else:
                self.state = self.FAILED
                if not self.errorMessage:
                    self.errorMessage = self._unexpectedExit(returnCode)
        except Exception as error:
            self.state = self.FAILED
            self.errorMessage = f"The result could not be loaded: {error}"
        finally:
            self._releaseJob()

    def _loadOutput(self) -> None:
        import SimpleITK as sitk

        image = sitk.ReadImage(str(self.outputPath))
        self.outputNode = storeResult(image, self.inputNode, self.outputNode, self.outputName)
        mapPath = self.errorMapPath(self.outputPath)
        if self.options.errorMap and mapPath.is_file():
            self.errorMapNode = storeErrorMap(
                sitk.ReadImage(str(mapPath)),
                self.outputNode,
                self.inputNode,
                _units(self.inputNode, self.stats),
                errorMapNodeOf(self.outputNode),
            )
