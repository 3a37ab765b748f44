"""A thin client over the four services' gRPC APIs, shared by the CLI, the demo
and the end-to-end tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from quorum import taskmessages
from quorum.rpc import channel
from quorum.settings import SERVICES, ServiceName
from quorum.tls import ClientTls
from quorum.v1 import (
    access_pb2,
    access_pb2_grpc,
    common_pb2,
    consensus_pb2,
    consensus_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    tasking_pb2,
    tasking_pb2_grpc,
)

CHUNK_BYTES = 256 * 1024
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class UploadFile:
    name: str
    data: bytes
    gold_label: str = ""


class QuorumClient:
    """Stubs for every service, over TLS with ``tls`` (:func:`quorum.tls.client_tls`);
    close() releases the channels."""

    def __init__(
        self, addresses: dict[ServiceName, str], api_key: str | None = None, *, tls: ClientTls | None = None
    ) -> None:
        self._channels = {name: channel(addresses[name], api_key=api_key, tls=tls) for name in SERVICES}
        self.ingest = ingest_pb2_grpc.IngestServiceStub(self._channels["ingest"])
        self.tasking = tasking_pb2_grpc.TaskingServiceStub(self._channels["tasking"])
        self.consensus = consensus_pb2_grpc.ConsensusServiceStub(self._channels["consensus"])
        self.payments = payments_pb2_grpc.PaymentsServiceStub(self._channels["payments"])
        self.access = access_pb2_grpc.AccessServiceStub(self._channels["access"])

    def create_key(self, role: access_pb2.Role, *, org_id: str = "", subject: str = "", name: str = "") -> str:
        """Issues a key (admin keys only) and returns its secret."""
        request = access_pb2.CreateKeyRequest(role=role, org_id=org_id, subject=subject, name=name)
        return self.access.CreateKey(request, timeout=30).secret

    def issue_worker_keys(self, worker_ids: Iterable[str]) -> dict[str, str]:
        """A worker key per worker id, e.g. for a simulated crowd."""
        return {w: self.create_key(access_pb2.ROLE_WORKER, subject=w, name="simulated worker") for w in worker_ids}

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()

    def __enter__(self) -> QuorumClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upload(
        self, job_id: str, files: Iterable[UploadFile], on_file: Callable[[], None] | None = None
    ) -> ingest_pb2.UploadSummary:
        """Streams files to ingest in chunks; per-file outcomes are in the summary."""

        def chunks() -> Iterator[ingest_pb2.UploadChunk]:
            for item in files:
                data = item.data
                first = True
                for start in range(0, max(len(data), 1), CHUNK_BYTES):
                    piece = data[start : start + CHUNK_BYTES]
                    last = start + CHUNK_BYTES >= len(data)
                    yield ingest_pb2.UploadChunk(
                        job_id=job_id if first else "",
                        filename=item.name if first else "",
                        data=piece,
                        end_of_file=last,
                        gold_label=item.gold_label if first else "",
                    )
                    first = False
                if on_file:
                    on_file()

        return self.ingest.UploadFiles(chunks(), timeout=3600)

    def import_manifest(
        self, job_id: str, content: bytes, fmt: ingest_pb2.ManifestFormat, base_dir: str = ""
    ) -> ingest_pb2.UploadSummary:
        return self.ingest.ImportManifest(
            ingest_pb2.ImportManifestRequest(job_id=job_id, format=fmt, content=content, base_dir=base_dir),
            timeout=3600,
        )

    def results(self, job_id: str) -> Iterator[consensus_pb2.TaskResult]:
        yield from self.consensus.ExportResults(consensus_pb2.ExportResultsRequest(job_id=job_id), timeout=3600)

    def job(self, job_id: str) -> ingest_pb2.Job:
        return self.ingest.GetJob(ingest_pb2.GetJobRequest(job_id=job_id), timeout=10)

    def quality(self, job_id: str = "") -> consensus_pb2.JobQuality:
        return self.consensus.GetJobQuality(consensus_pb2.GetJobQualityRequest(job_id=job_id), timeout=10)

    def tasking_stats(self, job_id: str = "") -> tasking_pb2.TaskingStats:
        return self.tasking.GetTaskingStats(tasking_pb2.GetTaskingStatsRequest(job_id=job_id), timeout=10)

    def money(self, job_id: str = "") -> payments_pb2.MoneySummary:
        return self.payments.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id=job_id), timeout=10)

    def invoice(self, job_id: str) -> payments_pb2.Invoice:
        return self.payments.GetInvoice(payments_pb2.GetInvoiceRequest(job_id=job_id), timeout=10)

    def set_budget_cap(self, job_id: str, cap_cents: int) -> payments_pb2.MoneySummary:
        return self.payments.SetBudgetCap(
            payments_pb2.SetBudgetCapRequest(job_id=job_id, budget_cap_cents=cap_cents), timeout=10
        )

    def create_payout_batch(self, currency: str, minimum_cents: int) -> payments_pb2.PayoutBatch:
        return self.payments.CreatePayoutBatch(
            payments_pb2.CreatePayoutBatchRequest(currency=currency, minimum_payout_cents=minimum_cents), timeout=60
        )

    def verify_ledger(self) -> payments_pb2.LedgerVerification:
        return self.payments.VerifyLedger(payments_pb2.VerifyLedgerRequest(), timeout=60)


def label_of(answer: common_pb2.Answer) -> str:
    """The label of a classification answer; for another answer type, the whole answer as
    JSON (e.g. ``{"boxes":{"boxes":[...]}}``, see :func:`quorum.taskmessages.answer_text`)."""
    return taskmessages.answer_text(answer)


def label_value(answer: common_pb2.Answer) -> object:
    """An answer as a JSON value: the label string of a classification answer, the answer
    as an object otherwise (e.g. ``{"boxes": {"boxes": [...]}}``)."""
    text = taskmessages.answer_text(answer)
    return json.loads(text) if text.startswith(taskmessages.ANSWER_JSON_START) else text


def result_record(result: consensus_pb2.TaskResult) -> dict[str, object]:
    """One line of `quorum results`: object, label, confidence, answers. Labels of structured
    task types are JSON objects (see :func:`label_value`)."""
    return {
        "object": result.object_name,
        "item_id": result.item_id,
        "task_id": result.task_id,
        "label": label_value(result.label),
        "confidence": round(result.confidence, 6),
        "low_confidence": result.low_confidence,
        "majority_label": label_value(result.majority_label),
        "answers": [
            {"worker": a.worker_id, "label": label_value(a.answer), "weight": round(a.weight, 6)}
            for a in result.answers
        ],
    }


def folder_files(folder: Path) -> list[Path]:
    """Image files directly or recursively under ``folder``, sorted for a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def manifest_format(path: Path) -> ingest_pb2.ManifestFormat:
    """JSONL or CSV by the file's suffix. Raises ValueError for anything else."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return ingest_pb2.MANIFEST_FORMAT_JSONL
    if suffix == ".csv":
        return ingest_pb2.MANIFEST_FORMAT_CSV
    raise ValueError(f"{path}: expected a .jsonl or .csv manifest")


def jsonl(records: Iterable[Mapping[str, object]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def rpc_error_text(error: grpc.RpcError) -> str:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return f"{code.name if code else 'ERROR'}: {details}"
