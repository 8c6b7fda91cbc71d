"""Rewrite the manifest of the shipped weights from the folders present and check each (maintainers' tool).

    mgcnn export RUN --out src/mgcnn/weights/ARCH.TAG --tag TAG --data-dir DATA
    python -m mgcnn.weights
"""

import sys

from mgcnn.zoo import MANIFEST, WEIGHTS_DIR, pretrained_info, write_manifest


def main() -> int:
    names = write_manifest()
    print(f"{WEIGHTS_DIR / MANIFEST}: {len(names)} set(s) of weights: {', '.join(names) or 'none'}")
    for name in names:
        info = pretrained_info(name)
        print(f"  {name}: test {info.get('test_acc')}% on {info.get('dataset')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
