"""What a volume file's own header says, read before ITK gets to "fix" it.

ITK reads some broken files without an error, and a patient volume read wrongly without an
error is the worst failure a tool like this can have:

* a NIfTI file cut short (a copy interrupted, a full disk) is read with the missing voxels as
  zeros (NRRD and MetaImage readers refuse such files themselves);
* a NIfTI ``pixdim`` of zero is replaced by 1 mm after a warning, and a negative one is taken
  as positive; MetaImage and NRRD headers can carry zero or negative spacings too.

So these few header fields are parsed here, by hand (a few fixed offsets of the NIfTI-1/-2
layout and the ``key: value`` text headers of NRRD and MetaImage), and checked first.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

#: NIfTI ``datatype`` -> bytes per voxel, for the types ITK reads.
_NIFTI_BYTES = {
    2: 1,
    4: 2,
    8: 4,
    16: 4,
    32: 8,
    64: 8,
    128: 3,
    256: 1,
    512: 2,
    768: 4,
    1024: 8,
    1280: 8,
    1536: 16,
    1792: 16,
    2048: 32,
    2304: 4,
}


@dataclass
class HeaderFacts:
    """The header fields CLADE checks: spacing per index axis and data bytes expected/present."""

    spacing: tuple[float | None, ...] | None = None
    spacing_field: str = "spacing"
    expected_bytes: int | None = None
    present_bytes: int | None = None

    @property
    def truncated(self) -> bool:
        return (
            self.expected_bytes is not None
            and self.present_bytes is not None
            and self.present_bytes < self.expected_bytes
        )


def read_header_facts(path: str | os.PathLike) -> HeaderFacts:
    """The facts of ``path``'s header (empty for formats and layouts not checked here).

    For NIfTI the data length is measured too (for ``.nii.gz`` by decompressing, stopping as
    soon as enough bytes came out).

    Example:
        >>> import SimpleITK as sitk, tempfile
        >>> name = os.path.join(tempfile.mkdtemp(), "v.nii")
        >>> image = sitk.Image([4, 4, 3], sitk.sitkInt16); image.SetSpacing((1.0, 1.0, 5.0))
        >>> sitk.WriteImage(image, name)
        >>> facts = read_header_facts(name)
        >>> facts.spacing, facts.expected_bytes - facts.present_bytes
        ((1.0, 1.0, 5.0), 0)
    """
    name = str(path).lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            return _nifti_facts(Path(path))
        if name.endswith((".nrrd", ".nhdr")):
            return _nrrd_facts(Path(path))
        if name.endswith((".mha", ".mhd")):
            return _meta_facts(Path(path))
    except (OSError, EOFError, zlib.error, struct.error, ValueError, UnicodeDecodeError):
        # Not readable as that format at all: ITK's reader gives the verdict.
        return HeaderFacts()
    return HeaderFacts()


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _nifti_facts(path: Path) -> HeaderFacts:
    with _open(path) as handle:
        head = handle.read(540)
        for endian in "<>":
            (size,) = struct.unpack_from(endian + "i", head, 0)
            if size in (348, 540):
                break
        else:
            return HeaderFacts()
        if size == 348:
            dims = struct.unpack_from(endian + "8h", head, 40)
            (datatype,) = struct.unpack_from(endian + "h", head, 70)
            pixdim = struct.unpack_from(endian + "8f", head, 76)
            (offset,) = struct.unpack_from(endian + "f", head, 108)
            magic = head[344:348]
            single_file = magic == b"n+1\x00"
        else:
            (datatype,) = struct.unpack_from(endian + "h", head, 12)
            dims = struct.unpack_from(endian + "8q", head, 16)
            pixdim = struct.unpack_from(endian + "8d", head, 104)
            (offset,) = struct.unpack_from(endian + "q", head, 168)
            single_file = head[4:8] == b"n+2\x00"
        ndim = int(dims[0])
        if not 1 <= ndim <= 7:
            return HeaderFacts()
        spatial = min(ndim, 3)
        # A length-1 axis (a single slice) has no spacing that matters: not checked (None).
        facts = HeaderFacts(
            spacing=tuple(
                float(v) if int(n) > 1 else None
                for v, n in zip(pixdim[1 : 1 + spatial], dims[1 : 1 + spatial])
            ),
            spacing_field="pixdim",
        )
        if not single_file or datatype not in _NIFTI_BYTES:
            return facts  # a .hdr/.img pair or a type ITK refuses: nothing more to measure
        voxels = math.prod(max(1, int(d)) for d in dims[1 : 1 + ndim])
        # ITK (niftilib) reads the voxels from max(vox_offset, header size).
        start = max(int(offset), size)
        facts.expected_bytes = start + voxels * _NIFTI_BYTES[datatype]
        if path.name.lower().endswith(".gz"):
            facts.present_bytes = len(head) + _count(handle, facts.expected_bytes - len(head))
        else:
            facts.present_bytes = os.path.getsize(path)
        return facts


def _count(handle, wanted: int, chunk: int = 1 << 22) -> int:
    """Bytes readable from ``handle``, stopping once ``wanted`` is reached."""
    total = 0
    try:
        while total < wanted:
            block = handle.read(min(chunk, wanted - total))
            if not block:
                break
            total += len(block)
    except EOFError:  # a gzip stream cut short: what came out before is what there is
        pass
    return total


def _text_header(path: Path, limit: int = 1 << 16) -> list[str]:
    with open(path, "rb") as handle:
        raw = handle.read(limit)
    end = raw.find(b"\n\n") if path.suffix.lower() in (".nrrd", ".mha") else -1
    text = raw[: end if end >= 0 else len(raw)].decode("latin-1")
    return text.splitlines()


def _numbers(text: str) -> list[float]:
    return [
        float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf", text)
    ]


def _nrrd_facts(path: Path) -> HeaderFacts:
    lines = _text_header(path)
    if not lines or not lines[0].startswith("NRRD"):
        return HeaderFacts()
    fields = {}
    for line in lines[1:]:
        if line.startswith("#") or ":" not in line or ":=" in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    if "space directions" in fields:
        # One vector per axis, "none" for a non-spatial one (a vector's length is the spacing).
        vectors = [v for v in re.findall(r"\([^)]*\)|none", fields["space directions"])]
        spacing = [math.hypot(*_numbers(v)) for v in vectors if v != "none"]
        return HeaderFacts(spacing=tuple(spacing), spacing_field="space directions")
    if "spacings" in fields:
        values = [
            v for v in fields["spacings"].split() if v.lower() != "nan"
        ]  # nan marks a non-spatial axis
        return HeaderFacts(spacing=tuple(float(v) for v in values), spacing_field="spacings")
    return HeaderFacts()


def _meta_facts(path: Path) -> HeaderFacts:
    fields = {}
    for line in _text_header(path):
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            break
    if "objecttype" not in fields and "ndims" not in fields:
        return HeaderFacts()
    if "elementspacing" in fields:
        spacing = tuple(_numbers(fields["elementspacing"]))
        return HeaderFacts(spacing=spacing, spacing_field="ElementSpacing")
    return HeaderFacts()
