"""Copy a trained model into the package as a shipped model and list it in the manifest.

The weights are stored in float16 (half the size; loaded as float32, see CLADE.model_file), the
model is renamed, and ``CLADE/models/manifest.json`` gets (or replaces) its entry with the file's
SHA-256, which every load checks.

Usage::

    python models/ship_model.py runs/train-mri/model_best.pt mri \
        --description "Pelvic and brain MRI, ..." --card models/cards/mri.md

Re-shipping a shipped file (e.g. to change its default ``--stride``) keeps its weights exactly:
they were float16 already, so the float32 round trip is lossless.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from CLADE.model_file import architecture_of, load_model, save_model
from CLADE.registry import DEFAULT_INFERENCE, MANIFEST_PATH, MODELS_DIR, sha256_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="trained model file (from clade train)")
    parser.add_argument("name", help="shipped name, e.g. mri or ct")
    parser.add_argument("--description", required=True)
    parser.add_argument("--card", help="model card (Markdown), path relative to the repository")
    parser.add_argument("--quality", help="JSON file of measured quality to copy into the entry")
    parser.add_argument(
        "--stride", type=int, help="default inference stride to record (default: the model's own)"
    )
    parser.add_argument(
        "--distilled-from",
        metavar="TEACHER",
        help="the teacher of a student that was fine-tuned after distillation (clade train "
        "--init-model records a new training, not the student's lineage)",
    )
    args = parser.parse_args()

    loaded = load_model(args.model)
    metadata = dict(loaded.metadata, name=args.name)
    if args.stride:
        metadata["default_stride"] = args.stride
    if args.distilled_from:
        metadata["training"] = dict(
            metadata.get("training", {}), distilled_from=args.distilled_from
        )
    target = MODELS_DIR / f"clade_{args.name}.pt"
    save_model(target, loaded.generator, metadata, half=True)
    entry = {
        "name": args.name,
        "file": target.name,
        "sha256": sha256_of(target),
        "modality": metadata["modality"],
        "default_stride": int(metadata.get("default_stride", 12)),
        "description": args.description,
        # Recorded here so `clade models` can state the cost without loading any network.
        "architecture": architecture_of(metadata),
    }
    teacher = metadata.get("training", {}).get("distilled_from")
    if teacher:  # a student (models/distil_student.py): its teacher, for the cards and tests
        entry["distilled_from"] = teacher
    if args.card:
        entry["card"] = args.card
    if args.quality:
        entry["quality"] = json.loads(Path(args.quality).read_text())
    manifest = json.loads(MANIFEST_PATH.read_text())
    previous = next((m for m in manifest["models"] if m["name"] == args.name), {})
    # How the model runs by default is a decision of its own (models/cards/inference.md):
    # a re-shipped model keeps it.
    entry["inference"] = previous.get("inference", dict(DEFAULT_INFERENCE))
    manifest["models"] = [m for m in manifest["models"] if m["name"] != args.name] + [entry]
    manifest["models"].sort(key=lambda m: m["name"])
    MANIFEST_PATH.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB), sha256 {entry['sha256']}")


if __name__ == "__main__":
    main()
