"""Repack a pymeshlab wheel with only what meshdream's clean-up uses (the clean and meshing filter
plugins and the shared libraries they and the core module need), for carrying to a machine without
network: the full wheel is ~106 MB, the slim one a fraction of it.

    python scripts/slim_pymeshlab_wheel.py pymeshlab-2025.7.post1-cp312-...whl OUT_FOLDER
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile

KEEP_PLUGINS = ("libfilter_clean.so", "libfilter_meshing.so", "libio_base.so")


def needed(path: str) -> list[str]:
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def slim(wheel: str, out_dir: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        pkg = next(os.path.join(r, d) for r, ds, _ in os.walk(tmp) for d in ds if d == "pymeshlab" and "purelib" in r or d == "pymeshlab")
        lib, plugins = os.path.join(pkg, "lib"), os.path.join(pkg, "lib", "plugins")
        roots = [os.path.join(pkg, f) for f in os.listdir(pkg) if f.endswith(".so")] + [os.path.join(plugins, p) for p in KEEP_PLUGINS]
        keep, todo = set(), list(roots)
        while todo:  # libraries the kept modules need, transitively, that the wheel itself ships
            for name in needed(todo.pop()):
                if name not in keep and os.path.exists(os.path.join(lib, name)):
                    keep.add(name)
                    todo.append(os.path.join(lib, name))
        for f in os.listdir(plugins):
            if f not in KEEP_PLUGINS:
                os.remove(os.path.join(plugins, f))
        for f in os.listdir(lib):
            p = os.path.join(lib, f)
            if os.path.isfile(p) and f not in keep:
                os.remove(p)
        for r, _, fs in os.walk(os.path.join(pkg, "tests")):
            for f in fs:
                os.remove(os.path.join(r, f))
        # rewrite RECORD for the files that remain
        record = next(os.path.join(r, f) for r, _, fs in os.walk(tmp) for f in fs if f == "RECORD" and r.endswith(".dist-info"))
        rows = []
        for r, _, fs in os.walk(tmp):
            for f in sorted(fs):
                p = os.path.join(r, f)
                rel = os.path.relpath(p, tmp)
                if p == record:
                    continue
                data = open(p, "rb").read()
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                rows.append(f"{rel},sha256={digest},{len(data)}")
        rows.append(f"{os.path.relpath(record, tmp)},,")
        open(record, "w").write("\n".join(rows) + "\n")
        os.makedirs(out_dir, exist_ok=True)
        target = os.path.join(out_dir, os.path.basename(wheel))
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            for r, _, fs in os.walk(tmp):
                for f in sorted(fs):
                    p = os.path.join(r, f)
                    z.write(p, os.path.relpath(p, tmp))
    return target


if __name__ == "__main__":
    print(slim(sys.argv[1], sys.argv[2]))
