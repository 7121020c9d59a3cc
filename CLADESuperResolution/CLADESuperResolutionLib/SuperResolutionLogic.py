"""Super-resolving volume nodes: in-process (scripts, batch) or in a worker process (GUI).

Both paths follow the same rules:

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
from .InputValidation import validateInputVolume
from .VolumeConversion import imageFromVolumeNode, updateVolumeNodeFromImage
from .WorkerProcess import EXIT_EVENT, PollingJob, WorkerProcess

#: The worker script run by the job's subprocess.
WORKER_SCRIPT = Path(__file__).resolve().parent / "SuperResolutionWorker.py"

#: Suffix of the default output node name.
OUTPUT_SUFFIX = "_CLADE"


@dataclass
class SuperResolutionOptions:
    """What the user chose; None means "the model's / core's default"."""

    model: str = "mri"
    stride: int | None = None
    plane: str = "auto"
    device: str = "auto"
    batchSize: int | None = None
    thickAxis: int | None = None
    #: Steps of adaptation to the input volume before super-resolving it (0: none).
    adaptSteps: int = 0

    def workerArguments(self) -> list[str]:
        """Command-line options of the worker script (and of ``clade super-resolve``)."""
        arguments = ["--model", str(self.model), "--plane", self.plane, "--device", self.device]
        if self.stride:
            arguments += ["--stride", str(int(self.stride))]
        if self.batchSize:
            arguments += ["--batch-size", str(int(self.batchSize))]
        if self.thickAxis is not None:
            arguments += ["--thick-axis", str(int(self.thickAxis))]
        if self.adaptSteps:
            arguments += ["--adapt", str(int(self.adaptSteps))]
        return arguments


def defaultOutputName(inputNode) -> str:
    """``<input name>_CLADE``, made unique in the scene."""
    return inputNode.GetScene().GenerateUniqueName(inputNode.GetName() + OUTPUT_SUFFIX)


def storeResult(image, inputNode, outputNode=None, name: str | None = None):
    """Put ``image`` into ``outputNode`` (or a new node next to ``inputNode``) and return it."""
    scene = inputNode.GetScene()
    if outputNode is None:
        outputNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                             name or defaultOutputName(inputNode))
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


def superResolveInProcess(inputNode, options: SuperResolutionOptions, outputNode=None,
                          progress=None, cancel=None):
    """Run the core in this process; return ``(outputNode, stats)``. Blocks until done.

    ``progress(info)`` and ``cancel() -> bool`` are passed to ``CLADE.super_resolve`` (and
    ``cancel`` to the adaptation, when ``options.adaptSteps`` asks for one).
    """
    checkInput(inputNode)
    CoreLocator.ensureCoreImportable()
    import CLADE

    image = imageFromVolumeNode(inputNode)
    model = CLADE.resolve_model(options.model, "cpu")
    if options.adaptSteps:
        from CLADE.adaptation import adapt_to_volume

        model = adapt_to_volume(image, model, steps=int(options.adaptSteps),
                                thick_axis=options.thickAxis, device=options.device,
                                cancel=cancel).model
    result = CLADE.super_resolve(
        image, model, stride=options.stride or None, plane=options.plane,
        thick_axis=options.thickAxis, device=options.device, batch_size=options.batchSize,
        progress=progress, cancel=cancel,
    )
    return storeResult(result.image, inputNode, outputNode), dict(result.stats)


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
    """One super-resolution run in a worker process, polled from the main thread.

    Typical use (the widget calls :meth:`poll` from a ``QTimer``)::

        job = SuperResolutionJob(inputNode, SuperResolutionOptions(model="mri"))
        job.start()
        while not job.done:
            for event in job.poll(): ...   # progress events update the GUI
        job.outputNode  # set when job.state == "succeeded"; job.errorMessage otherwise
    """

    pollInterval = 0.05

    RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"

    def __init__(self, inputNode, options: SuperResolutionOptions, outputNode=None,
                 outputName: str | None = None, python: str | None = None,
                 workerScript: Path = WORKER_SCRIPT, tempRoot=None, observeScene: bool = True):
        checkInput(inputNode)
        if outputNode is not None and outputNode is inputNode:
            raise ValueError("The output volume must differ from the input volume, which is kept.")
        self.inputNode = inputNode
        self.options = options
        self.outputNode = outputNode
        self.outputName = outputName
        self.python = python or pythonExecutable()
        self.workerScript = Path(workerScript)
        self.tempRoot = tempRoot
        self.observeScene = observeScene
        self.state = None
        self.fraction = 0.0
        self.etaSeconds = None
        #: What the worker is doing: "adapting" or "super-resolving" (fraction is per stage).
        self.stage = "super-resolving"
        self.adaptation = ""
        self.stats = {}
        self.summary = ""
        self.errorMessage = ""
        self.tempDir = None
        self.worker = None
        self._sceneObserver = None
        self._scene = None

    @property
    def done(self) -> bool:
        return self.state in (self.SUCCEEDED, self.FAILED, self.CANCELLED)

    def start(self) -> None:
        """Export the input to a temporary file and start the worker."""
        import SimpleITK as sitk

        self.tempDir = Path(tempfile.mkdtemp(prefix="CLADE-", dir=self.tempRoot))
        inputPath = self.tempDir / "input.nrrd"
        self.outputPath = self.tempDir / "output.nrrd"
        try:
            sitk.WriteImage(imageFromVolumeNode(self.inputNode), str(inputPath))
            command = [self.python, str(self.workerScript), "--input", str(inputPath),
                       "--output", str(self.outputPath), *self.options.workerArguments()]
            self.worker = WorkerProcess(command, env=CoreLocator.workerEnvironment())
            self.worker.start()
        except Exception:
            self._removeTempDir()
            raise
        self.state = self.RUNNING
        if self.observeScene and self.inputNode.GetScene() is not None:
            self._scene = self.inputNode.GetScene()
            # Closing the scene removes the nodes the result would go to: stop the work too.
            self._sceneObserver = self._scene.AddObserver(self._scene.StartCloseEvent,
                                                          self._onSceneClose)

    def _onSceneClose(self, caller=None, event=None) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Kill the worker's process tree; nothing is written to the scene."""
        if self.state != self.RUNNING:
            return
        self.worker.cancel()
        self._finish(cancelled=True)

    def poll(self) -> list[dict]:
        """Drain the worker's events (main thread only); finishes the job on the exit event."""
        if self.worker is None:
            return []
        events = self.worker.drainEvents()
        for event in events:
            kind = event.get("event")
            if kind == "progress":
                self.fraction = float(event.get("fraction", self.fraction))
                self.etaSeconds = event.get("eta")
                self.stage = str(event.get("stage", "super-resolving"))
            elif kind == "adapted":
                self.adaptation = str(event.get("summary", ""))
            elif kind == "finished":
                self.stats = dict(event.get("stats") or {})
                self.summary = event.get("summary", "")
            elif kind == "error":
                self.errorMessage = str(event.get("message", ""))
            elif kind == EXIT_EVENT and self.state == self.RUNNING:
                self._finish(cancelled=event.get("cancelled", False),
                             returnCode=event.get("returnCode"))
        return events

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
                    lines = self.worker.lastErrorLines()[-5:]
                    details = (": " + " | ".join(lines)) if lines else "."
                    self.errorMessage = (
                        f"The super-resolution worker stopped unexpectedly (exit code "
                        f"{returnCode}){details}"
                    )
        except Exception as error:
            self.state = self.FAILED
            self.errorMessage = f"The result could not be loaded: {error}"
        finally:
            self._stopObservingScene()
            self._removeTempDir()

    def _loadOutput(self) -> None:
        import SimpleITK as sitk

        image = sitk.ReadImage(str(self.outputPath))
        self.outputNode = storeResult(image, self.inputNode, self.outputNode, self.outputName)

    def _stopObservingScene(self) -> None:
        if self._sceneObserver is not None:
            self._scene.RemoveObserver(self._sceneObserver)
            self._sceneObserver = None

    def _removeTempDir(self) -> None:
        if self.tempDir is not None:
            shutil.rmtree(self.tempDir, ignore_errors=True)
