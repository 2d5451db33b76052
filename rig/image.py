"""The machines' image: Debian 12 from ``image/recipe.sh``, built once per recipe.

The tag is a hash of the recipe folder, so the image (about a minute of debootstrap) is
reused until the recipe changes; older tags of the rig are removed when a new one is
built.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from rig.podman import LABEL, podman, succeeds

RECIPE_DIR = Path(__file__).with_name("image")
REPOSITORY = "localhost/cdpipe-rig-debian"


def recipe_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(RECIPE_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(RECIPE_DIR).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def ensure_image(say: Callable[[str], None] = print) -> str:
    tag = f"{REPOSITORY}:{recipe_hash()}"
    if succeeds("image", "exists", tag):
        return tag
    say(f"rig: building the machine image {tag} (debootstrap, about a minute)")
    with tempfile.TemporaryDirectory(prefix="cdpipe-rig-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log = Path(tmp) / "recipe.log"
        with log.open("wb") as out:
            built = subprocess.run([str(RECIPE_DIR / "recipe.sh"), str(rootfs)],
                                   stdout=out, stderr=subprocess.STDOUT, check=False)
        if built.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError("rig: the image recipe failed: " + " | ".join(tail))
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            podman("import", "--change", 'CMD ["/sbin/init"]', "--change",
                   "STOPSIGNAL=SIGRTMIN+3", "--change", f"LABEL {LABEL}=image",
                   "-", tag, stdin=tar.stdout.read())
        finally:
            tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
    for old in podman("images", "--format", "{{.Repository}}:{{.Tag}}",
                      REPOSITORY).split():
        if old != tag:
            podman("rmi", old, check=False)
    say(f"rig: image {tag} ready")
    return tag
