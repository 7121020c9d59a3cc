"""An offline machine with torch but without tqdm and matplotlib still super-resolves.

Slicer's Python has neither package, and an offline machine cannot pip-install them. The core
runs here in a subprocess where both imports are blocked (``sys.modules[name] = None`` makes any
``import`` of them raise ImportError, as a missing package does); the Slicer side asks only for
what an action needs (``Dependencies.requirementsFor``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import SimpleITK as sitk
from conftest import make_volume, run_python

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CLADESuperResolution"))

#: Runs ``clade ARGS`` with tqdm and matplotlib unimportable.
BLOCKED = (
    "import sys; sys.modules['tqdm'] = None; sys.modules['matplotlib'] = None; "
    "from CLADE.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def test_super_resolve_with_its_bar_runs_without_tqdm_and_matplotlib(tmp_path, tiny_model_path):
    source, target = tmp_path / "thick.nii.gz", tmp_path / "sr.nii.gz"
    sitk.WriteImage(make_volume(), str(source))
    run = run_python(
        "-c", BLOCKED, "super-resolve", source, target, "--model", tiny_model_path,
        "--device", "cpu", "--progress", "bar",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert sitk.ReadImage(str(target)).GetSize() == (40, 36, 32)


def test_slicer_asks_for_torch_only_to_super_resolve_and_matplotlib_only_for_training():
    from CLADESuperResolutionLib import Dependencies

    assert Dependencies.requirementsFor("super-resolve") == ["scipy>=1.10"]
    assert Dependencies.requirementsFor("train") == ["scipy>=1.10"]
    assert "tqdm" not in str(Dependencies.PIP_REQUIREMENTS)
    assert set(Dependencies.OPTIONAL_REQUIREMENTS) == {"matplotlib"}


def offlineInstaller(answers, calls, declined):
    """Torch and scipy installed (as in Slicer after the PyTorch extension), no network."""
    from CLADESuperResolutionLib import Dependencies

    def pipInstall(requirements):
        calls.append(("pip", requirements))
        raise OSError("no network")

    return Dependencies.DependencyInstaller(
        confirm=lambda question: calls.append(("ask", question)) or answers.pop(0),
        installTorch=lambda requirement: calls.append(("torch", requirement)),
        pipInstall=pipInstall,
        isInstalled=lambda name: name in {"torch", "scipy", "numpy", "SimpleITK"},
        torchVersion=lambda: "2.13.0",
        declined=declined,
    )


def test_offline_slicer_with_torch_super_resolves_and_trains_without_the_plot():
    """Before: tqdm and matplotlib were pip-installed before the first Super-resolve, so an
    offline machine was refused ("Could not install tqdm>=4.60, matplotlib>=3.6")."""
    from CLADESuperResolutionLib import Dependencies

    calls, declined = [], set()
    assert offlineInstaller([], calls, declined).ensure("super-resolve") == (True, "")
    assert calls == []  # nothing asked, nothing installed
    # Training offers matplotlib once; the failed (offline) install does not stop it.
    assert offlineInstaller([True], calls, declined).ensure("train") == (True, "")
    assert calls == [("ask", Dependencies.MATPLOTLIB_QUESTION), ("pip", "matplotlib>=3.6")]
    assert offlineInstaller([], calls, declined).ensure("train") == (True, "")
    assert len(calls) == 2  # not asked again this session


def test_a_declined_plot_is_not_asked_again_and_installs_nothing():
    calls, declined = [], set()
    assert offlineInstaller([False], calls, declined).ensure("train") == (True, "")
    assert offlineInstaller([], calls, declined).ensure("train") == (True, "")
    assert [kind for kind, _ in calls] == ["ask"]
