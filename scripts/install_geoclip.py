"""Install GeoCLIP's code, bundled weights and GPS gallery without its package metadata.

geoclip 1.3.0 pins ``huggingface-hub<2``, which the rest of LocDiff's stack has outgrown; its code
(and the parts LocDiff uses: the location encoder, the weights, the gallery) runs with the current
one. Installed normally (even with ``--no-deps``) its stale pin makes every later ``pip install``
print ``ERROR: pip's dependency resolver ...``. Unpacking the wheel's ``geoclip/`` package without
its ``.dist-info`` keeps the code importable while pip never sees the pins.

    python3 scripts/install_geoclip.py            # into this interpreter's site-packages
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

VERSION = "1.3.0"


def unpack(wheel: Path, target: Path) -> list[str]:
    """Extract the ``geoclip/`` package of ``wheel`` into ``target`` (no ``.dist-info``); returns the names written."""
    written = []
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not name.startswith("geoclip/") or name.endswith("/") or ".." in Path(name).parts:
                continue
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(archive.read(name))
            written.append(name)
    return written


def main() -> int:
    target = Path(sysconfig.get_paths()["purelib"])
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", f"geoclip=={VERSION}", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("geoclip-*.whl"))
        # an earlier install with metadata (e.g. `pip install --no-deps geoclip`): drop it, pins and all
        subprocess.run([*pip, "uninstall", "-q", "-y", "geoclip"], check=False, capture_output=True)
        written = unpack(wheel, target)
    print(f"geoclip {VERSION}: {len(written)} files in {target / 'geoclip'} (code, weights, gallery; no pip metadata)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
