"""``python -m detector SUBCOMMAND ...``: each subcommand lives in its own module's ``main``."""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "phantom": ("detector.phantom", "main", "generate synthetic liver sweeps with COCO boxes"),
    "train": ("detector.train", "main", "train a single / two_frame / concat detector"),
    "evaluate": ("detector.evaluate", "main", "COCO AP, per-scene sensitivity, FP per minute"),
    "cv": ("detector.cv", "main", "k-fold cross-validation grouped by patient"),
    "compare": ("detector.evaluate", "compare_main", "paired per-scene comparison of two reports"),
    "predict": ("detector.predict", "main", "detections for frames or a video as JSON"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        print("usage: python -m detector {" + ",".join(COMMANDS) + "} ...", file=sys.stderr)
        for name, (_, _, text) in COMMANDS.items():
            print(f"  {name:<9} {text}", file=sys.stderr)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    module, func, _ = COMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
