"""A tiny training run on a real (cropped) brain MRI, and the command's answers to bad input."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import BRAIN2, MR_ISO

from CLADE.cli.main import main
from CLADE.geometry import resample_to_isotropic
from CLADE.model_file import load_model
from CLADE.training import TrainingConfig, read_events, train
from CLADE.training.checkpoint import load_checkpoint
from CLADE.training.trainer import build_networks

TINY = dict(base_filters=4, n_blocks=1, disc_filters=4)
TINY_ARGS = ["--base-filters", "4", "--n-blocks", "1", "--disc-filters", "4"]


@pytest.fixture(scope="module")
def crops(test_data, brain_crop, tmp_path_factory):
    """A 64x64x8 training crop (thick axis z, 6.5 mm), a validation crop and its reference."""
    folder = tmp_path_factory.mktemp("crops")
    val_image = sitk.ReadImage(str(test_data / BRAIN2))[16:64, 16:64, 9:13]
    shutil.copy(brain_crop, folder / "train.nrrd")
    sitk.WriteImage(val_image, str(folder / "val.nrrd"))
    # Any volume on the validation output grid exercises PSNR/SSIM; spline is the natural one.
    sitk.WriteImage(resample_to_isotropic(val_image, 2), str(folder / "val_iso.nrrd"))
    return folder


@pytest.fixture(scope="module")
def trained(crops, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    config = TrainingConfig.from_preset(
        "mri", epochs=2, batch_size=4, max_patches=32, log_every=2, val_stride=16, **TINY
    )
    seen = []
    result = train(
        [crops / "train.nrrd"],
        out,
        config,
        val=[crops / "val.nrrd"],
        val_reference=[crops / "val_iso.nrrd"],
        progress=seen.append,
        progress_bar=False,
    )
    return result, out, seen, config


def test_run_writes_everything(trained):
    result, out, seen, _ = trained
    for name in (
        "checkpoint.pt",
        "run.json",
        "events.jsonl",
        "training.png",
        "model_final.pt",
        "model_best.pt",
    ):
        assert (out / name).is_file(), name
    assert result.final_model == out / "model_final.pt"
    assert result.best_epoch in (1, 2) and result.best_model == out / "model_best.pt"
    events = read_events(out / "events.jsonl")
    assert events == seen  # the file and the callback carry the same events
    kinds = [e["event"] for e in events]
    assert kinds[0] == "sampling" and kinds[1] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 2 and kinds.count("validation") == 2
    steps = [e for e in events if e["event"] == "step"]
    assert [s["step"] for s in steps if s["epoch"] == 1] == [2, 4, 6, 8]
    for step in steps:
        assert set(step["losses"]) == {
            "g_total",
            "adv",
            "cyc",
            "ident",
            "gmap",
            "d_x",
            "d_y",
            "paired",
            "dc",
        }
        assert all(math.isfinite(v) for v in step["losses"].values())
        assert step["patches_per_s"] > 0 and step["eta_s"] >= 0
    assert steps[-1]["progress"] == 1.0 and steps[-1]["eta_s"] == 0
    for epoch in (e for e in events if e["event"] == "epoch"):
        assert set(epoch["metrics"]) == {"piqe", "psnr", "ssim"}
        assert 0 <= epoch["metrics"]["piqe"] <= 100 and -1 <= epoch["metrics"]["ssim"] <= 1
        assert epoch["best_metric"] == "ssim"  # auto with a reference
    with open(out / "training.png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_weights_change_and_checkpoint_is_plain(trained):
    _, out, _, config = trained
    torch.manual_seed(config.optimiser.seed)
    initial = build_networks(config)
    state = load_checkpoint(out / "checkpoint.pt")  # weights_only=True inside
    assert state["epoch"] == 2 and state["pairs_done"] == 0 and state["global_step"] == 16
    for name in ("g_x", "g_y", "d_x", "d_y"):
        before = initial[name].state_dict()
        after = state["networks"][name]
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert changed, f"{name} did not change"
        assert all(torch.isfinite(v).all() for v in after.values())
    final = load_model(out / "model_final.pt")
    for key, value in final.generator.state_dict().items():
        assert torch.equal(value, state["networks"]["g_x"][key])


def test_exported_model_loads_and_super_resolves(trained, crops):
    from CLADE.pipeline import super_resolve

    _, out, _, config = trained
    model = load_model(out / "model_best.pt")
    training = model.metadata["training"]
    assert training["config"]["lambda_gmap"] == 5.0 and training["epoch"] in (1, 2)
    assert model.metadata["architecture"] == {
        "base_filters": 4,
        "n_blocks": 1,
        "upsample": "transpose",
        "residual": False,
    }
    image = sitk.ReadImage(str(crops / "val.nrrd"))
    result = super_resolve(image, model, stride=16, device="cpu")
    array = sitk.GetArrayFromImage(result.image)
    assert result.image.GetSize() == (48, 48, 33) and np.isfinite(array).all()
    assert array.std() > 0


def run_cli(args, capsys):
    code = main(["train", *args])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("clade: error")]
    return code, lines, err


def test_refuses_a_folder_holding_another_run(trained, crops, capsys):
    _, out, _, _ = trained
    before = (out / "checkpoint.pt").read_bytes()
    code, lines, err = run_cli([str(crops / "train.nrrd"), "--out", str(out), *TINY_ARGS], capsys)
    assert code == 2 and len(lines) == 1 and "already holds a training run" in lines[0]
    assert "--resume" in lines[0] and "Traceback" not in err
    code, lines, _ = run_cli(["--out", str(out), "--resume", "--base-filters", "8"], capsys)
    assert code == 2 and "other settings (base_filters)" in lines[0]
    code, lines, _ = run_cli(["--out", str(out), "--resume", "--seed", "3"], capsys)
    assert code == 2 and "other settings (seed)" in lines[0]
    assert (out / "checkpoint.pt").read_bytes() == before  # nothing lost


@pytest.mark.parametrize(
    "case", ["empty", "unreadable", "isotropic", "2d", "few", "noresume", "isoval"]
)
def test_bad_input_is_one_sentence(case, crops, test_data, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    extra = []
    if case == "unreadable":
        (data / "scan.nrrd").write_text("not really a volume")
        (data / "notes.txt").write_text("hello")
    elif case == "isotropic":
        data = test_data / MR_ISO
    elif case == "2d":
        sitk.WriteImage(sitk.Image([40, 40], sitk.sitkFloat32), str(data / "slice.nrrd"))
    elif case == "few":
        data = crops / "train.nrrd"
        extra = ["--max-patches", "16", "--batch-size", "32"]
    elif case == "noresume":
        out.mkdir()
        extra = ["--resume"]
    elif case == "isoval":
        data = crops / "train.nrrd"
        extra = ["--val", str(test_data / MR_ISO)]
    code, lines, err = run_cli([str(data), "--out", str(out), *TINY_ARGS, *extra], capsys)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    message = lines[0]
    expected = {
        "empty": "is empty",
        "unreadable": "notes.txt (it is not an image SimpleITK can read); scan.nrrd (it is not",
        "isotropic": "abdomen_mr_3mm_iso_totalseg.nii.gz (the volume is already nearly isotropic",
        "2d": "slice.nrrd (it is a 2D image)",
        "few": "fewer than one batch of 32",
        "noresume": "no checkpoint to resume",
        "isoval": "cannot be used (the volume is already nearly isotropic",
    }[case]
    assert expected in message, message
    assert message.rstrip().endswith(".")
    if case != "noresume":
        assert not (out / "checkpoint.pt").exists() and not (out / "run.json").exists()


def test_a_resumed_run_keeps_validating_on_its_volumes(crops, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--epochs", "1", "--max-patches", "16", "--val-stride", "16", *TINY_ARGS, "--quiet"]
    code, lines, err = run_cli(
        [
            str(crops / "train.nrrd"),
            "--out",
            str(out),
            *args,
            "--val",
            str(crops / "val.nrrd"),
            "--val-reference",
            str(crops / "val_iso.nrrd"),
            "--best-metric",
            "psnr",
        ],
        capsys,
    )
    assert code == 0, err
    code, lines, err = run_cli(["--out", str(out), "--resume", "--epochs", "2"], capsys)
    assert code == 0, err
    validations = [e for e in read_events(out / "events.jsonl") if e["event"] == "validation"]
    assert [e["epoch"] for e in validations] == [1, 2]
    assert all("psnr" in e["metrics"] for e in validations)


def test_the_cyclegan_epochs_start_with_fresh_generator_moments():
    from CLADE.training.trainer import TrainStep, build_networks

    config = TrainingConfig.from_preset("mri", lambda_paired=5.0, warmup_epochs=1, **TINY)
    networks = build_networks(config)
    step = TrainStep(networks, config, torch.device("cpu"))
    y = torch.rand(2, 1, 32, 32) * 2 - 1
    step.warmup(y, y.flip(-2))
    assert len(step.opt_g.state) > 0
    step.reset_generator_optimizer()
    assert len(step.opt_g.state) == 0
    trained = {id(p) for group in step.opt_g.param_groups for p in group["params"]}
    expected = {id(p) for name in ("g_x", "g_y") for p in networks[name].parameters()}
    assert trained == expected
