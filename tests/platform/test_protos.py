"""The committed generated code must be exactly what the .proto files produce."""

from __future__ import annotations

import filecmp
from pathlib import Path

from quorum.tools import protogen


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    fresh = protogen.generate(tmp_path)
    committed_dir = protogen.REPO_ROOT / protogen.GENERATED_PACKAGE
    fresh_names = sorted(p.name for p in fresh)
    committed_names = sorted(p.name for p in committed_dir.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    assert fresh_names == committed_names, "run: python -m quorum.tools.protogen"
    stale = [
        name
        for name in fresh_names
        if not filecmp.cmp(tmp_path / protogen.GENERATED_PACKAGE / name, committed_dir / name, shallow=False)
    ]
    assert not stale, f"generated code is stale for {stale}: run python -m quorum.tools.protogen"


def test_every_service_proto_declares_one_service() -> None:
    from quorum.v1 import consensus_pb2, ingest_pb2, payments_pb2, tasking_pb2

    names = [
        next(iter(module.DESCRIPTOR.services_by_name))
        for module in (ingest_pb2, tasking_pb2, consensus_pb2, payments_pb2)
    ]
    assert names == ["IngestService", "TaskingService", "ConsensusService", "PaymentsService"]
