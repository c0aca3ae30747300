"""Regenerate the checked-in stubs under proto/fanout/v1 from the .proto files.

Run with the pinned grpcio-tools from the dev extra (`make proto`). With
`--check` it writes to a scratch folder and exits 1 when the checked-in stubs
differ, which is how CI proves they are current.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = PROTO_ROOT / "fanout" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    protos = sorted(PACKAGE.glob("*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p) for p in protos],
    ]
    subprocess.run(cmd, check=True)
    return sorted(p for p in (out_root / "fanout" / "v1").iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the checked-in stubs are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        generated = generate(Path(scratch))
        names = {p.name for p in generated}
        checked_in = {p.name for p in PACKAGE.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        if args.check:
            stale = sorted(names ^ checked_in)
            stale += [
                p.name
                for p in generated
                if p.name in checked_in and not filecmp.cmp(p, PACKAGE / p.name, shallow=False)
            ]
            if stale:
                print("stale generated stubs (run `make proto`): " + ", ".join(stale), file=sys.stderr)
                return 1
            print(f"generated stubs are current ({len(names)} files)")
            return 0
        for name in checked_in - names:
            (PACKAGE / name).unlink()
        for path in generated:
            shutil.copyfile(path, PACKAGE / path.name)
        print(f"wrote {len(generated)} files to {PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
