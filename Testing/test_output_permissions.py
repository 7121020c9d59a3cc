"""Outputs get the permissions any normal file write would give them (0666 less the umask).

Write-then-rename through ``tempfile.mkstemp`` made every output mode 0600, so a colleague on a
shared server could not open a super-resolved volume. These tests fail if that comes back.
"""

from __future__ import annotations

import os
import stat

import SimpleITK as sitk
import torch
from conftest import make_volume, run_clade

from CLADE.atomic_files import publish, reserve_temporary
from CLADE.model_file import build_generator, make_metadata, save_model
from CLADE.training.checkpoint import save_checkpoint


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_cli_output_is_readable_by_the_group_under_umask_022(tmp_path, tiny_model_path):
    source = tmp_path / "thick.nrrd"
    sitk.WriteImage(make_volume(size=(40, 36, 6), spacing=(1.0, 1.0, 4.0)), str(source))
    out = tmp_path / "iso.nii.gz"
    command = ["super-resolve", source, out, "--model", tiny_model_path, "--stride", "32"]
    result = run_clade(*command, timeout=600, preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 0, result.stderr
    assert _mode(out) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iso.nii.gz", "thick.nrrd"]


def test_model_files_and_checkpoints_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        metadata = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, trained=False)
        model = save_model(tmp_path / "m.pt", build_generator(metadata), metadata)
        checkpoint = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2)})
    finally:
        os.umask(previous)
    assert _mode(model) == 0o640
    assert _mode(checkpoint) == 0o640


def test_reserved_temporaries_never_clobber_and_publish_replaces(tmp_path):
    target = tmp_path / "out.nii.gz"
    target.write_text("previous")
    names = {reserve_temporary(target, ".partial.nii.gz") for _ in range(20)}
    assert len(names) == 20  # each a new file: O_EXCL never hands out an existing name
    assert all(
        n.name.endswith(".partial.nii.gz") and n.name.startswith(".out.nii.gz.") for n in names
    )
    assert target.read_text() == "previous"  # reserving does not touch the final file
    first = sorted(names)[0]
    first.write_text("new")
    publish(first, target)
    assert target.read_text() == "new" and not first.exists()
