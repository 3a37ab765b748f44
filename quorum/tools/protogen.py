"""Regenerates the Python gRPC code in ``quorum/v1`` from ``protos/``.

Run ``python -m quorum.tools.protogen`` after editing a ``.proto`` file. The
test suite calls :func:`generate` into a temporary folder and fails when the
result differs from the committed code.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
GENERATED_PACKAGE = Path("quorum") / "v1"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / GENERATED_PACKAGE).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Writes ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` under ``out_dir``.

    Raises RuntimeError when protoc reports an error. Returns the files written.
    """
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")
    package = out_dir / GENERATED_PACKAGE
    (package / "__init__.py").write_text(
        '"""Generated gRPC code. Do not edit: run python -m quorum.tools.protogen."""\n'
    )
    return sorted(p for p in package.iterdir() if p.is_file())


def main() -> int:
    written = generate(REPO_ROOT)
    print(f"wrote {len(written)} files to {REPO_ROOT / GENERATED_PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
