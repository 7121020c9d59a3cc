"""Training settings: frozen groups with flat names, torch-free presets, the parser's checks."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from CLADE.cli.main import build_parser
from CLADE.cli.train import overrides
from CLADE.errors import CladeError
from CLADE.training import events
from CLADE.training.loss_terms import LOSS_NAMES
from CLADE.training.presets import (
    GROUP_OF,
    GROUPS,
    PRESETS,
    RESUMABLE_CHANGES,
    SETTING_NAMES,
    TrainingConfig,
)


def run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter (what it imports is then all its own)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_presets_and_event_readers_import_without_torch():
    code = (
        "import sys, CLADE.training.presets, CLADE.training.events, CLADE.training.loss_terms, "
        "CLADE.training.run_record; import CLADE.training as t; t.TrainingConfig; t.PRESETS; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    )
    run_python(code)


def test_flat_settings_land_in_their_frozen_group():
    config = TrainingConfig.from_preset("ct", epochs=3, lr=1e-4, base_filters=8, device="cpu")
    assert (config.schedule.epochs, config.optimiser.lr) == (3, 1e-4)
    assert (config.architecture.base_filters, config.bookkeeping.device) == (8, "cpu")
    assert config.loss.lambda_gmap == PRESETS["ct"]["lambda_gmap"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.loss.lambda_gmap = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.loss = config.loss
    # Whole groups can be passed too, and the flat record is what run.json always held.
    again = TrainingConfig(preset="ct", **{g: getattr(config, g) for g in GROUPS})
    assert again == config and TrainingConfig.from_dict(config.to_dict()) == config
    assert set(config.to_dict()) == set(SETTING_NAMES) and len(SETTING_NAMES) == 37
    with pytest.raises(CladeError, match="Unknown training settings bogus"):
        TrainingConfig.from_dict({"bogus": 1})


def test_resumable_settings_are_those_of_the_resumable_groups():
    assert set(RESUMABLE_CHANGES) == {
        "epochs",
        "checkpoint_minutes",
        "log_every",
        "device",
        "lambda_cyc",
        "lambda_ident",
        "lambda_gmap",
        "lambda_paired",
        "lambda_dc",
        "warmup_epochs",
    }
    assert {GROUP_OF[name] for name in RESUMABLE_CHANGES} == {"loss", "schedule", "bookkeeping"}
    base = TrainingConfig()
    assert base.differences(base.with_settings(lambda_dc=5.0, epochs=20)) == []
    assert base.differences(base.with_settings(adversarial="lsgan", max_patches=9)) == [
        "max_patches",
        "adversarial",
    ]


def test_switches_are_named_not_implied_by_weights():
    off = TrainingConfig()
    on = TrainingConfig(lambda_paired=20.0, warmup_epochs=2, lambda_dc=1.0, lambda_ident=0.0)
    assert not off.loss.paired_term and on.loss.paired_term
    assert (off.loss.dc_term, on.loss.dc_term) == (False, True)
    assert (off.loss.identity_term, on.loss.identity_term) == (True, False)
    assert [on.schedule.is_warmup(e) for e in range(3)] == [True, True, False]
    assert [on.schedule.starts_cyclegan(e) for e in range(3)] == [False, False, True]
    assert not any(off.schedule.starts_cyclegan(e) for e in range(3))


def test_every_setting_option_reaches_the_config_by_its_own_name():
    parser = build_parser()
    train_parser = next(
        a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("train")
    )
    options = {a.dest for a in train_parser._actions if a.option_strings}
    setting_options = options & set(SETTING_NAMES)
    # Options that are not settings: where things go and what the command does.
    assert options - setting_options == {
        "help",
        "out",
        "resume",
        "window",
        "val",
        "val_reference",
        "events",
        "quiet",
    }
    values = {
        "epochs": "3",
        "batch_size": "2",
        "lambda_cyc": "0.5",
        "lambda_ident": "0.5",
        "lambda_gmap": "2",
        "lambda_paired": "4",
        "lambda_dc": "1",
        "warmup_epochs": "1",
        "adversarial": "lsgan",
        "lr": "0.001",
        "lr_schedule": "cosine",
        "init_model": "start.pt",
        "seed": "3",
        "device": "cpu",
        "checkpoint_minutes": "5",
        "patches_per_slice": "2",
        "patch_size": "48",
        "max_patches": "10",
        "min_foreground": "0.5",
        "plane": "axial",
        "base_filters": "8",
        "n_blocks": "2",
        "upsample": "resize",
        "disc_filters": "8",
        "val_stride": "8",
        "best_metric": "piqe",
        "log_every": "3",
        "modality": "CT",
    }
    argv = ["train", "a.nrrd", "--out", "r", "--residual", "--paired-ratios", "2", "6"]
    for name, text in values.items():
        argv += ["--" + name.replace("_", "-"), text]
    got = overrides(parser.parse_args(argv))
    assert set(got) == setting_options - {"preset"}
    config = TrainingConfig.from_preset("mri", **got).to_dict()
    assert all(
        str(config[name]) == text or float(config[name]) == float(text)
        for name, text in values.items()
        if name not in ("plane", "device")
    )
    assert config["residual"] is True and config["paired_ratios"] == [2.0, 6.0]


BAD_NUMBERS = [
    ("--epochs", "0"),
    ("--epochs", "2.5"),
    ("--batch-size", "-1"),
    ("--lambda-gmap", "nan"),
    ("--lambda-cyc", "-1"),
    ("--lambda-ident", "inf"),
    ("--lambda-paired", "-0.5"),
    ("--lambda-dc", "nan"),
    ("--warmup-epochs", "-1"),
    ("--lr", "0"),
    ("--lr", "inf"),
    ("--seed", "-3"),
    ("--checkpoint-minutes", "0"),
    ("--patches-per-slice", "0"),
    ("--patch-size", "0"),
    ("--patch-size", "256"),
    ("--max-patches", "0"),
    ("--min-foreground", "1.5"),
    ("--base-filters", "0"),
    ("--n-blocks", "-1"),
    ("--disc-filters", "0"),
    ("--val-stride", "0"),
    ("--log-every", "0"),
]


@pytest.mark.parametrize("option,value", BAD_NUMBERS)
def test_bad_numbers_are_refused_by_the_parser(option, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["train", "a.nrrd", "--out", str(tmp_path / "r"), option, value])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert re.search(rf"argument {option}: expected .*, got '{re.escape(value)}'", err)
    assert not (tmp_path / "r").exists()


def test_a_bad_number_ends_the_command_in_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "CLADE",
            "train",
            "a.nrrd",
            "--out",
            str(tmp_path / "r"),
            "--lr",
            "nan",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "clade train: error: argument --lr: expected a finite number, got 'nan'"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("option", ["--paired-ratios", "--window"])
def test_pairs_of_numbers_must_be_finite(option, tmp_path, capsys):
    values = ["0.5", "2"] if option == "--paired-ratios" else ["0", "nan"]
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(
            ["train", "a.nrrd", "--out", str(tmp_path / "r"), option, *values]
        )
    assert stopped.value.code == 2
    assert f"argument {option}: expected" in capsys.readouterr().err


def test_the_events_schema_lists_the_loss_names():
    listed = re.search(r"``step``.*?``losses``(.*?)\)", events.__doc__, re.S).group(1)
    assert tuple(re.findall(r"``(\w+)``", listed.split("LOSS_NAMES")[-1])) == LOSS_NAMES


def test_inference_time_modules_import_nothing_from_training():
    code = (
        "import importlib, sys\n"
        "for name in ('CLADE.inference', 'CLADE.adaptation', 'CLADE.pipeline'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as error:\n"
        "        if error.name != name: raise\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('CLADE.training'))\n"
        "assert not loaded, loaded\n"
    )
    run_python(code)
