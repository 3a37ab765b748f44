"""The ``quorum`` command line: run the stack, submit work, read results."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quorum.settings import SERVICES
from quorum.tasktypes import TASK_TYPES

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from quorum.security.keys import KeyStore
    from quorum.service import ServiceContext, ServiceParts
    from quorum.settings import Settings

BUILDERS: dict[str, str] = {name: f"services.{name}.bootstrap" for name in SERVICES}


def builder(name: str) -> Callable[[ServiceContext], ServiceParts]:
    """The composition root of a service, imported on demand."""
    build: Callable[[ServiceContext], ServiceParts] = importlib.import_module(BUILDERS[name]).build
    return build


def _load_settings() -> Settings:
    from pydantic import ValidationError

    from quorum.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        # A check across several variables has no location: its message names them.
        problems = "; ".join(
            f"QUORUM_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise SystemExit(f"quorum: bad configuration: {problems}") from None


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def cmd_serve(args: argparse.Namespace) -> int:
    from quorum.service import keep_start_up_out_of_collections, start_service

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.service} %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every connection it opens and closes at INFO; the broker-generation
    # check alone opens one every 2 s, which buried the service's own lines (99% of a log).
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = _load_settings()
    try:
        running = start_service(builder(args.service), settings)
    except RuntimeError as exc:
        print(f"quorum serve {args.service}: {exc}", file=sys.stderr)
        return 1
    keep_start_up_out_of_collections()
    logging.getLogger("quorum").info(
        "%s serving on %s:%d (gRPC, health, reflection)", args.service, settings.bind_host, running.port
    )
    failed = threading.Event()
    shutting_down = threading.Event()

    def watchdog() -> None:
        # A dead consumer means events pile up unseen: exit so a supervisor restarts us.
        while not shutting_down.wait(1.0):
            if not running.healthy():
                logging.getLogger("quorum").error("%s: a consumer or loop died; exiting", args.service)
                failed.set()
                signal.raise_signal(signal.SIGTERM)
                return

    threading.Thread(target=watchdog, daemon=True).start()
    _wait_for_signal()
    shutting_down.set()
    running.stop(drain_delay_s=settings.drain_delay_s, grace_s=settings.drain_grace_s)
    return 1 if failed.is_set() else 0


def cmd_up(args: argparse.Namespace) -> int:
    from quorum.settings import SERVICES
    from quorum.stack import LocalStack
    from quorum.tls import client_tls

    settings = _load_settings()
    ports = {name: settings.service_port(name) for name in SERVICES}
    stack = LocalStack(
        home=Path(args.home) if args.home else settings.home,
        ports=ports,
        dashboard=not args.no_dashboard,
        dashboard_port=settings.dashboard_port,
        tls=client_tls(settings),
    )
    try:
        stack.start()
    except RuntimeError as exc:
        print(f"quorum up: {exc}", file=sys.stderr)
        return 1
    print(f"Quorum is up (data in {stack.home}, logs in {stack.log_dir})")
    print(f"  kafka      {stack.broker.bootstrap if stack.broker else '?'}")
    for name, address in stack.addresses.items():
        print(f"  {name:<10} {address}")
    if stack.dashboard_url:
        print(f"  dashboard  {stack.dashboard_url}")
    print(stack.transport_notice())
    print("Ctrl-C stops everything.", flush=True)
    try:
        _wait_for_signal()
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboard.launch import launch

    return launch(host=args.host, port=args.port)


def cmd_demo(args: argparse.Namespace) -> int:
    from quorum.demo.run import DemoOptions, run_demo
    from quorum.tls import client_tls

    options = DemoOptions(
        objects=args.objects,
        workers=args.workers,
        seed=args.seed,
        dashboard=args.dashboard,
        keep=args.keep,
        json_output=args.json,
        timeout_s=args.timeout,
        tls=client_tls(_load_settings()),
        task=args.task,
    )
    return run_demo(options)


def _client(settings: Settings, api_key: str | None = None) -> Any:
    """A client sending ``api_key``; by default the session `quorum sign-in` stored while it
    lasts, else the key (quorum.security.credentials.client_credential)."""
    from quorum.client import QuorumClient
    from quorum.security.credentials import client_credential
    from quorum.settings import SERVICES
    from quorum.tls import client_tls

    if api_key is None:
        credential = client_credential(settings)
        api_key = credential.token if credential is not None else None
    return QuorumClient(
        {name: settings.service_addr(name) for name in SERVICES},
        api_key=api_key,
        tls=client_tls(settings),
    )


def _unauthenticated_hint(error: Any) -> str:
    """What to do about a refused credential: sign in (again), or get a key."""
    from quorum.rpc import second_factor_required
    from quorum.security.credentials import client_credential

    credential = client_credential(_load_settings())
    if credential is not None and credential.session is not None:
        return (
            "  the session that `quorum sign-in` stored was refused (it was ended, or its key was revoked): "
            "run `quorum sign-in` again"
        )
    if second_factor_required(error):
        expired = credential.expired if credential is not None else None
        when = f"your sign-in expired at {expired.expires_at:%Y-%m-%d %H:%M} UTC; " if expired else ""
        return f"  {when}sign in with the key's TOTP code: `quorum sign-in` (it prompts for the code, or takes --code)"
    return f"  {_GET_A_KEY}"


def _rpc_guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        import grpc

        from quorum.client import rpc_error_text

        try:
            return func(args)
        except grpc.RpcError as exc:
            print(f"quorum {args.command}: {rpc_error_text(exc)}", file=sys.stderr)
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                print(_unauthenticated_hint(exc), file=sys.stderr)
            return 1

    return wrapped


def cmd_sign_in(args: argparse.Namespace) -> int:
    """Signs the configured key in with its TOTP code and stores the session in the
    credentials file, for later commands to send until it expires."""
    import datetime as dt

    import grpc

    from quorum.client import rpc_error_text
    from quorum.rpc import second_factor_required
    from quorum.security.credentials import StoredSession, credentials_path, store_session
    from quorum.v1 import access_pb2

    settings = _load_settings()
    key = settings.client_api_key()
    if key is None:
        print(f"quorum sign-in: no key to sign in with: {_GET_A_KEY}", file=sys.stderr)
        return 2
    code = args.code or ""
    with _client(settings, api_key=key) as client:
        try:
            try:
                reply = client.access.SignIn(access_pb2.SignInRequest(totp_code=code), timeout=30)
            except grpc.RpcError as exc:
                if code or second_factor_required(exc) != "totp":
                    raise
                code = _ask_totp_code()
                if not code:
                    print("quorum sign-in: this key needs its TOTP code: give --code CODE", file=sys.stderr)
                    return 2
                reply = client.access.SignIn(access_pb2.SignInRequest(totp_code=code), timeout=30)
        except grpc.RpcError as exc:
            print(f"quorum sign-in: {rpc_error_text(exc)}", file=sys.stderr)
            return 1
    if not reply.session_token:
        print(f"{_key_line(reply.key)}\nthis key has no TOTP enrolled: commands send it as it is, nothing was stored")
        return 0
    expires_at = reply.session_expires_at.ToDatetime(tzinfo=dt.UTC)
    _end_replaced_session(settings, reply.key.key_id)
    store_session(settings.home, StoredSession(reply.key.key_id, reply.session_token, expires_at))
    print(_key_line(reply.key))
    print(
        f"signed in until {expires_at:%Y-%m-%d %H:%M} UTC; commands send the session "
        f"(kept in {credentials_path(settings.home)}) instead of the key until then"
    )
    return 0


def _ask_totp_code() -> str:
    """The code typed at the terminal, or "" when there is none to ask."""
    if not sys.stdin.isatty():
        return ""
    return input("TOTP code: ").strip()


def _end_session(settings: Settings, token: str) -> int:
    """Calls SignOut with ``token``: a session token ends that session, a key every session
    of the key. Returns how many were live; raises grpc.RpcError."""
    from quorum.v1 import access_pb2

    with _client(settings, api_key=token) as client:
        reply = client.access.SignOut(access_pb2.SignOutRequest(), timeout=30)
    return int(reply.sessions_ended)


def _end_replaced_session(settings: Settings, key_id: str) -> None:
    """Ends the unexpired session stored for ``key_id`` before a new one takes its place in
    the credentials file: forgotten there, it would stay a live bearer token nobody tracks.
    A failure does not stop the sign-in, but is said."""
    import grpc

    from quorum.client import rpc_error_text
    from quorum.security.credentials import stored_session

    old = stored_session(settings.home, key_id)
    if old is None or old.expired():
        return
    try:
        _end_session(settings, old.token)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNAUTHENTICATED:  # else already ended, or the key revoked
            print(
                f"quorum sign-in: the session this one replaces could not be ended ({rpc_error_text(exc)}); "
                f"it stays valid until {old.expires_at:%Y-%m-%d %H:%M} UTC",
                file=sys.stderr,
            )


def cmd_sign_out(args: argparse.Namespace) -> int:
    """Ends the stored session in the access service, then forgets it. With no session
    stored (or only an expired one), signs out with the key, which ends every session of
    the key wherever it was started (other machines, the dashboard); the key stays valid."""
    import grpc

    from quorum.client import rpc_error_text
    from quorum.security.credentials import client_credential, forget_session

    settings = _load_settings()
    credential = client_credential(settings)
    if credential is None:
        print(f"quorum sign-out: no key: {_GET_A_KEY}", file=sys.stderr)
        return 2
    live = credential.session is not None
    try:
        # The stored session while it lasts, else the key.
        ended = _end_session(settings, credential.token)
    except grpc.RpcError as exc:
        # A stored session refused as unknown was ended already (or its key revoked): forgetting
        # it is all that is left. Any other failure keeps it, so that signing out can be retried.
        if not (live and exc.code() == grpc.StatusCode.UNAUTHENTICATED):
            print(f"quorum sign-out: {rpc_error_text(exc)}", file=sys.stderr)
            return 1
        ended = 0
    if credential.session is not None or credential.expired is not None:
        forget_session(settings.home, credential.key_id)
    if live:
        print(f"signed out: the session of key {credential.key_id} is ended and forgotten")
    else:
        print(f"signed out with the key: {ended} session(s) of key {credential.key_id} ended; the key stays valid")
    return 0


_GET_A_KEY = (
    "set QUORUM_API_KEY to a key from `quorum keys create`, or run the embedded stack (`quorum up`), "
    "which stores the local user's key in QUORUM_HOME/credentials"
)


@_rpc_guard
def cmd_submit(args: argparse.Namespace) -> int:
    from google.protobuf.timestamp_pb2 import Timestamp
    from tqdm import tqdm

    from quorum import client as qc
    from quorum.v1 import ingest_pb2

    path = Path(args.path)
    if not path.exists():
        print(f"quorum submit: {path} does not exist", file=sys.stderr)
        return 2
    is_images = path.is_dir()
    settings = _load_settings()
    spec = _job_spec(args, "image_classification" if is_images else "text_classification", settings)
    spec.name = args.name or path.name
    spec.instructions = args.instructions
    if args.sla_hours:
        deadline = Timestamp()
        deadline.GetCurrentTime()
        deadline.seconds += int(args.sla_hours * 3600)
        spec.sla_deadline.CopyFrom(deadline)
    with _client(settings) as client:
        job = client.ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=spec), timeout=30)
        print(f"job {job.job_id} created", file=sys.stderr)
        if is_images:
            files = qc.folder_files(path)
            gold = _gold_map(args.gold)
            with tqdm(total=len(files), desc="upload", unit="file", file=sys.stderr) as bar:
                summary = client.upload(
                    job.job_id,
                    (qc.UploadFile(str(f.relative_to(path)), f.read_bytes(), gold.get(f.name, "")) for f in files),
                    on_file=lambda: bar.update(1),
                )
        else:
            fmt = qc.manifest_format(path)
            summary = client.import_manifest(job.job_id, path.read_bytes(), fmt, str(path.resolve().parent))
        for item in summary.items:
            if item.status != ingest_pb2.ITEM_STATUS_ACCEPTED:
                status = ingest_pb2.ItemStatus.Name(item.status).removeprefix("ITEM_STATUS_").lower()
                print(f"  {status}: {item.name}: {item.reason}", file=sys.stderr)
        if not args.no_seal:
            client.ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job.job_id), timeout=30)
        print(
            f"accepted {summary.accepted}, duplicates {summary.duplicates}, rejected {summary.rejected}",
            file=sys.stderr,
        )
        print(job.job_id)
    return 0


def _job_spec(args: argparse.Namespace, task: str, settings: Settings) -> Any:
    """The JobSpec of a ``task`` job from the options `quorum submit` and `quorum quote`
    share (:func:`_add_job_spec_arguments`), so that a quote is of the job submitted."""
    from quorum.tasktypes import task_type
    from quorum.v1 import common_pb2

    spec = common_pb2.JobSpec(
        # Empty: the service fills in a client key's organisation, and asks other keys for one.
        client_id=args.client or (LOCAL_ORG if settings.api_key is None else ""),
        overlap=common_pb2.Overlap(min=args.min_overlap, max=args.max_overlap),
        target_confidence=args.target_confidence,
        gold_share=args.gold_share,
        price_per_object_cents=args.price_cents,
        pay_per_answer_cents=args.pay_cents,
        price_mode=common_pb2.PRICE_MODE_PER_HOUR if args.price_per_hour_cents else common_pb2.PRICE_MODE_PER_OBJECT,
        price_per_hour_cents=args.price_per_hour_cents,
        pay_mode=common_pb2.PAY_MODE_PER_HOUR if args.pay_per_hour_cents else common_pb2.PAY_MODE_PER_ANSWER,
        pay_per_hour_cents=args.pay_per_hour_cents,
        price_per_annotation_cents=args.price_per_annotation_cents,
        budget_cap_cents=args.budget_cap_cents,
        currency=args.currency,
        pilot=args.pilot,
        pilot_allowance=args.pilot_allowance,
        expert_review=args.expert_review,
        gold_bonus_cents=args.gold_bonus_cents,
        gold_bonus_threshold=args.gold_bonus_threshold,
        gold_bonus_min_answers=args.gold_bonus_min_answers,
    )
    config = getattr(spec, task)
    config.SetInParent()
    kind = task_type(task)
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else []
    if kind is not None and kind.has_labels:
        config.labels[:] = labels
    return spec


@_rpc_guard
def cmd_quote(args: argparse.Namespace) -> int:
    from quorum.v1 import payments_pb2

    settings = _load_settings()
    request = payments_pb2.QuoteRequest(
        spec=_job_spec(args, args.task, settings),
        objects=args.objects,
        expected_overlap=args.expected_overlap,
        seconds_per_answer=args.seconds_per_answer,
    )
    if args.annotations_per_object is not None:
        request.expected_annotations_per_object = args.annotations_per_object
    with _client(settings) as client:
        quote = client.payments.Quote(request, timeout=30)
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(quote, always_print_fields_with_no_presence=True)))
        return 0

    def money(cents: int) -> str:
        return _money(cents, quote.currency)

    print(f"quote for {quote.objects} objects ({args.task.replace('_', ' ')}), in {quote.currency}")
    print(
        f"  answers       {quote.expected_answers} ({quote.expected_overlap:.2f} per object), "
        f"active time {quote.expected_active_ms / 3_600_000:.1f} h"
    )
    if quote.expected_annotations or quote.annotation_cents:
        print(f"  annotations   {quote.expected_annotations}, charged {money(quote.annotation_cents)}")
    if quote.pilot_discount_cents:
        # A per-hour pilot's allowance counts answers, a per-object pilot's objects.
        free = (
            f"{quote.free_answers} answers"
            if quote.free_answers
            else f"{quote.objects - quote.billable_objects} objects"
        )
        print(f"  pilot         -{money(quote.pilot_discount_cents)} ({free} free)")
    print(f"  client pays   {money(quote.client_cents)}")
    print(f"  workers earn  {money(quote.worker_cents)}")
    print(f"  margin        {money(quote.margin_cents)}")
    if quote.max_gold_bonus_cents:
        print(f"  gold bonus    up to {money(quote.max_gold_bonus_cents)} more for workers")
    return 0


def _gold_map(path: str | None) -> dict[str, str]:
    """file name -> known label, from a CSV with columns file,label."""
    if not path:
        return {}
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return {row["file"]: row["label"] for row in csv.DictReader(handle)}


@_rpc_guard
def cmd_status(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from quorum.v1 import ingest_pb2

    settings = _load_settings()
    with _client(settings) as client:
        job = client.job(args.job)
        tasking = client.tasking_stats(args.job)
        quality = client.quality(args.job)
        money = client.money(args.job)
    if args.json:
        print(
            json.dumps(
                {
                    "job": MessageToDict(job),
                    "tasking": MessageToDict(tasking),
                    "quality": MessageToDict(quality),
                    "money": MessageToDict(money),
                }
            )
        )
        return 0
    state = ingest_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    done = quality.resolved / job.objects if job.objects else 0.0
    print(f"job {job.job_id} ({job.spec.name}) {state}")
    print(f"  objects   {job.objects} (+{job.gold_objects} gold, {job.rejected} rejected)")
    print(f"  resolved  {quality.resolved} ({done:.0%}), low confidence {quality.low_confidence}")
    print(f"  answers   {tasking.answers}, live leases {tasking.active_leases}, backlog {tasking.backlog}")
    print(f"  quality   agreement {quality.agreement:.3f}, gold accuracy {quality.gold_accuracy:.3f}")
    print(
        f"  money     billed {_money(money.billed_cents, money.currency)}, paid {_money(money.paid_cents, money.currency)}"
    )
    if money.paused:
        print(f"  PAUSED    {money.pause_reason} (raise it with: quorum budget {job.job_id} --cap-cents N)")
    return 0


def _money(cents: int, currency: str) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d} {currency or 'USD'}"


@_rpc_guard
def cmd_results(args: argparse.Namespace) -> int:
    from quorum.client import result_record

    settings = _load_settings()
    count = 0
    out = Path(args.out)
    with _client(settings) as client, out.open("w", encoding="utf-8") as handle:
        for result in client.results(args.job):
            handle.write(json.dumps(result_record(result), ensure_ascii=False) + "\n")
            count += 1
    print(f"wrote {count} results to {out}", file=sys.stderr)
    return 0


@_rpc_guard
def cmd_invoice(args: argparse.Namespace) -> int:
    from services.payments import documents

    settings = _load_settings()
    with _client(settings) as client:
        invoice = client.invoice(args.job)
    return _emit_invoice(
        args, invoice, _invoice_of, documents.invoice_csv, documents.invoice_pdf, documents.invoice_text_lines
    )


def _emit_invoice(
    args: argparse.Namespace,
    message: Any,
    document_of: Callable[[Any], Any],
    csv_of: Callable[[Any], str],
    pdf_of: Callable[[Any], bytes],
    text_lines_of: Callable[[Any], list[str]],
) -> int:
    """Writes an invoice reply as ``args.format`` (json, csv, pdf or text) to ``args.out``."""
    from google.protobuf.json_format import MessageToDict

    if args.format == "json":
        return _emit(args.out, json.dumps(MessageToDict(message, always_print_fields_with_no_presence=True), indent=2))
    document = document_of(message)
    if args.format == "csv":
        return _emit(args.out, csv_of(document))
    if args.format == "pdf":
        return _emit(args.out, pdf_of(document))
    return _emit(args.out, "\n".join(text_lines_of(document)) + "\n")


@_rpc_guard
def cmd_period_invoice(args: argparse.Namespace) -> int:
    import datetime as dt

    from google.protobuf.timestamp_pb2 import Timestamp

    from quorum.v1 import payments_pb2
    from services.payments import documents

    def stamp(day: str, flag: str) -> Timestamp:
        try:
            moment = dt.datetime.fromisoformat(day)
        except ValueError:
            raise SystemExit(f"quorum period-invoice: {flag} {day!r} is not a date (YYYY-MM-DD)") from None
        ts = Timestamp()
        ts.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC))
        return ts

    request = payments_pb2.GetPeriodInvoiceRequest(
        client_id=args.client,
        period_start=stamp(args.start, "--from"),
        period_end=stamp(args.end, "--to"),
        currency=args.currency,
    )
    settings = _load_settings()
    with _client(settings) as client:
        invoice = client.payments.GetPeriodInvoice(request, timeout=30)
    return _emit_invoice(
        args,
        invoice,
        _period_invoice_of,
        documents.period_invoice_csv,
        documents.period_invoice_pdf,
        documents.period_invoice_text_lines,
    )


def _lines_of(lines: Any) -> list[Any]:
    """The domain invoice lines of repeated payments_pb2.InvoiceLine."""
    from services.payments.domain import InvoiceLine

    return [InvoiceLine(x.description, x.quantity, x.unit_price_cents, x.amount_cents, x.job_id) for x in lines]


def _invoice_of(invoice: Any) -> Any:
    """The domain invoice of a payments_pb2.Invoice, for the document writers."""
    import datetime as dt

    from services.payments.domain import Invoice

    return Invoice(
        job_id=invoice.job_id,
        client_id=invoice.client_id,
        currency=invoice.currency,
        lines=_lines_of(invoice.lines),
        objects_labeled=invoice.objects_labeled,
        pilot_objects=invoice.pilot_objects,
        total_cents=invoice.total_cents,
        issued_at=invoice.issued_at.ToDatetime(tzinfo=dt.UTC),
    )


def _period_invoice_of(invoice: Any) -> Any:
    """The domain period invoice of a payments_pb2.PeriodInvoice, for the document writers."""
    import datetime as dt

    from services.payments.domain import PeriodInvoice

    return PeriodInvoice(
        client_id=invoice.client_id,
        currency=invoice.currency,
        period_start=invoice.period_start.ToDatetime(tzinfo=dt.UTC),
        period_end=invoice.period_end.ToDatetime(tzinfo=dt.UTC),
        lines=_lines_of(invoice.lines),
        total_cents=invoice.total_cents,
        issued_at=invoice.issued_at.ToDatetime(tzinfo=dt.UTC),
    )


def _emit(out: str | None, content: str | bytes) -> int:
    """Writes to the file ``out``, or to stdout when it is empty or "-"."""
    data = content.encode() if isinstance(content, str) else content
    if out and out != "-":
        Path(out).write_bytes(data)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


@_rpc_guard
def cmd_budget(args: argparse.Namespace) -> int:
    settings = _load_settings()
    with _client(settings) as client:
        money = client.set_budget_cap(args.job, args.cap_cents)
    state = f"paused: {money.pause_reason}" if money.paused else "running"
    print(f"job {args.job}: budget cap {_money(money.budget_cap_cents, money.currency)}, {state}")
    return 0


@_rpc_guard
def cmd_sla(args: argparse.Namespace) -> int:
    from quorum.v1 import ingest_pb2

    request = ingest_pb2.SetJobSlaRequest(job_id=args.job, clear_deadline=args.clear)
    if args.deadline:
        request.sla_deadline.CopyFrom(_timestamp_arg("--deadline", args.deadline, ago=False))
    elif not args.clear:
        print("quorum sla: give --deadline (a time, or e.g. 48h from now) or --clear", file=sys.stderr)
        return 2
    with _client(_load_settings()) as client:
        job = client.ingest.SetJobSla(request, timeout=10)
    if job.spec.HasField("sla_deadline"):
        print(f"job {job.job_id}: SLA deadline {job.spec.sla_deadline.ToDatetime(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    else:
        print(f"job {job.job_id}: no SLA deadline")
    return 0


def _worker_line(status: Any) -> str:
    if status.suspended_by_operator:
        state = "SUSPENDED by an operator"
    elif status.suspended:
        state = "SUSPENDED: spam flag"
    elif status.flag_overridden:
        state = "active: spam flag overridden"
    else:
        state = "active"
    changed = f"{status.changed_at.ToDatetime(dt.UTC):%Y-%m-%d %H:%M:%S}" if status.HasField("changed_at") else "-"
    reason = status.reason or status.spam_reason
    return f"{status.worker_id:<24} {state:<28} {changed} {status.changed_by or '-'} {reason}".rstrip()


@_rpc_guard
def cmd_workers_change(args: argparse.Namespace) -> int:
    from quorum.v1 import tasking_pb2

    with _client(_load_settings()) as client:
        if args.workers_command == "suspend":
            request = tasking_pb2.SuspendWorkerRequest(worker_id=args.worker, reason=args.reason)
            status = client.tasking.SuspendWorker(request, timeout=30)
        else:
            reinstate = tasking_pb2.ReinstateWorkerRequest(worker_id=args.worker, reason=args.reason)
            status = client.tasking.ReinstateWorker(reinstate, timeout=30)
    print(_worker_line(status))
    return 0


@_rpc_guard
def cmd_workers_list(args: argparse.Namespace) -> int:
    from quorum.v1 import tasking_pb2

    with _client(_load_settings()) as client:
        if args.worker:
            print(
                _worker_line(
                    client.tasking.GetWorkerStatus(
                        tasking_pb2.GetWorkerStatusRequest(worker_id=args.worker), timeout=10
                    )
                )
            )
            return 0
        token = ""
        while True:
            page = client.tasking.ListWorkerStatuses(
                tasking_pb2.ListWorkerStatusesRequest(suspended_only=args.suspended, page_size=500, page_token=token),
                timeout=30,
            )
            for status in page.workers:
                print(_worker_line(status))
            token = page.next_page_token
            if not token:
                return 0


@_rpc_guard
def cmd_delete(args: argparse.Namespace) -> int:
    from quorum.v1 import ingest_pb2

    if not args.yes:
        print(
            f"quorum delete: this purges job {args.job}'s media, items and results for good; "
            "the ledger keeps its postings. Add --yes to go ahead.",
            file=sys.stderr,
        )
        return 2
    with _client(_load_settings()) as client:
        reply = client.ingest.DeleteJob(ingest_pb2.DeleteJobRequest(job_id=args.job), timeout=120)
    print(f"job {reply.job_id} deleted: {reply.items_deleted} items, {reply.objects_deleted} stored objects")
    return 0


@_rpc_guard
def cmd_payouts_create(args: argparse.Namespace) -> int:
    settings = _load_settings()
    with _client(settings) as client:
        batch = client.create_payout_batch(args.currency, args.minimum_cents)
    out = Path(args.out or f"{batch.batch_id}.csv")
    out.write_text(batch.export_csv, encoding="utf-8")
    print(
        f"payout batch {batch.batch_id}: {len(batch.payouts)} workers, "
        f"{_money(batch.total_cents, batch.currency)}; file {out}"
    )
    return 0


@_rpc_guard
def cmd_ledger_adjust(args: argparse.Namespace) -> int:
    from quorum.v1 import payments_pb2

    request = payments_pb2.AdjustLedgerRequest(
        request_id=args.request_id,
        debit_account=args.debit,
        credit_account=args.credit,
        amount_cents=args.amount_cents,
        currency=args.currency,
        job_id=args.job,
        reason=args.reason,
    )
    with _client(_load_settings()) as client:
        adjustment = client.payments.AdjustLedger(request, timeout=30)
    entry = adjustment.entry
    what = "posted" if adjustment.created else "already posted (nothing new)"
    print(
        f"adjustment {adjustment.request_id} {what}: entry {entry.entry_id}, "
        f"{_money(entry.amount_cents, entry.currency)} from {entry.credit_account} to {entry.debit_account}"
        f"{f' on job {entry.job_id}' if entry.job_id else ''}: {adjustment.reason}"
    )
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    if args.database_url:
        return _verify_offline(args.database_url)
    return _verify_online(args)


def _verify_offline(url: str) -> int:
    """Audits a payments database directly, with no service running."""
    import sqlalchemy as sa

    from quorum.db import make_engine
    from quorum.settings import masked_url
    from services.payments.handlers import verify_ledger

    engine = make_engine(url)
    try:
        if not sa.inspect(engine).has_table("postings"):
            print(f"quorum ledger verify: no payments ledger at {masked_url(url)}", file=sys.stderr)
            return 2
        result = verify_ledger(engine)
    finally:
        engine.dispose()
    return _print_verification(
        result.entries,
        [(t.currency, t.debits_cents, t.credits_cents) for t in result.totals],
        [(a.account, a.balance_cents, a.currency) for a in result.accounts],
        result.problems,
        result.balanced,
    )


@_rpc_guard
def _verify_online(args: argparse.Namespace) -> int:
    settings = _load_settings()
    with _client(settings) as client:
        result = client.verify_ledger()
    return _print_verification(
        result.entries,
        [(t.currency, t.debits_cents, t.credits_cents) for t in result.totals],
        [(a.account, a.balance_cents, a.currency) for a in result.accounts],
        list(result.problems),
        result.balanced,
    )


def _print_verification(
    entries: int,
    totals: list[tuple[str, int, int]],
    accounts: list[tuple[str, int, str]],
    problems: list[str],
    balanced: bool,
) -> int:
    # Amounts in different currencies do not add up: one line of totals per currency.
    print(f"entries {entries}")
    for currency, debits, credits in totals:
        print(f"  {currency}: debits {debits}, credits {credits}")
    for account, balance, currency in accounts:
        print(f"  {account:<40} {balance:>14} {currency}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("ledger balanced" if balanced else "ledger NOT balanced")
    return 0 if balanced and not problems else 1


def cmd_storage_rewrap(args: argparse.Namespace) -> int:
    from quorum.crypto import MasterKeyError
    from quorum.objectstore import open_object_store, rewrap_all

    settings = _load_settings()
    try:
        store = open_object_store(settings)
    except (MasterKeyError, ValueError) as exc:
        print(f"quorum storage rewrap: {exc}", file=sys.stderr)
        return 2
    report = rewrap_all(store.inner, store.keyring)
    for key, reason in report.failed:
        print(f"  failed: {key}: {reason}", file=sys.stderr)
    print(
        f"master key {store.keyring.current_id}: rewrapped {report.rewrapped}, "
        f"already current {report.already_current}, failed {len(report.failed)}"
    )
    if report.plaintext:
        print(f"{report.plaintext} objects stored before encryption have no data key and stay as they are")
    totp_failed = _reseal_totp_secrets(settings, store.keyring)
    return 1 if report.failed or totp_failed else 0


def _reseal_totp_secrets(settings: Settings, keyring: Any) -> int:
    """Moves the TOTP secrets in the access database under the current master key too, and
    prints how it went; returns how many failed. An access database that does not exist
    (this host runs no access service and names none) holds none."""
    import sqlalchemy as sa

    from quorum.db import make_engine
    from quorum.security.keys import api_keys, reseal_totp_secrets

    url = settings.access_database()
    database = sa.make_url(url)
    if database.get_backend_name() == "sqlite" and not (database.database and Path(database.database).exists()):
        return 0
    engine = make_engine(url)
    try:
        if not sa.inspect(engine).has_table(api_keys.name):
            return 0
        report = reseal_totp_secrets(engine, keyring)
    finally:
        engine.dispose()
    for key_id, reason in report.failed:
        print(f"  failed: TOTP secret of API key {key_id}: {reason}", file=sys.stderr)
    print(
        f"TOTP secrets in the access database: resealed {report.resealed}, "
        f"already current {report.already_current}, failed {len(report.failed)}"
    )
    return len(report.failed)


def cmd_storage_new_master_key(args: argparse.Namespace) -> int:
    from quorum.crypto import new_key_text

    print(new_key_text())
    print(
        "Set it as QUORUM_MASTER_KEY and move the old key into QUORUM_PREVIOUS_MASTER_KEYS on every "
        "process, then run `quorum storage rewrap` (docs/security.md).",
        file=sys.stderr,
    )
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from services.consensus.offline import InputError, run

    try:
        outcome = run(
            Path(args.answers),
            args.method,
            Path(args.out),
            known_path=Path(args.known) if args.known else None,
            gold_path=Path(args.gold) if args.gold else None,
        )
    except (InputError, ValueError) as exc:
        print(f"quorum aggregate: {exc}", file=sys.stderr)
        return 2
    score = (
        f", accuracy {outcome.accuracy:.4f} on {outcome.gold_tasks} gold tasks" if outcome.accuracy is not None else ""
    )
    print(
        f"{outcome.method}: {outcome.tasks} tasks from {outcome.answers} answers by {outcome.workers} workers "
        f"in {outcome.fit_seconds:.3f} s{score}; labels in {args.out}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(outcome.as_dict()))
    return 0


ROLES = ("client", "worker", "reviewer", "operator", "admin")
# The organisation the local user of the embedded stack submits for, with the admin key
# `quorum up` keeps in QUORUM_HOME/credentials.
LOCAL_ORG = "local"
# JobSpec task types, for `quorum quote --task` (quorum.tasktypes is pure and small).
TASKS = tuple(sorted(TASK_TYPES))
# `quorum demo --task`: classification and the structured kinds of quorum.demo.kinds.KINDS,
# named here so that parsing arguments does not import the demo (numpy, Pillow).
DEMO_TASKS = (
    "classification",
    "boxes",
    "multi_label",
    "keypoints",
    "segmentation",
    "spans",
    "transcription",
    "pairwise",
)


def _key_line(key: Any) -> str:
    from quorum.v1 import access_pb2

    role = access_pb2.Role.Name(key.role).removeprefix("ROLE_").lower()
    org = f" org={key.org_id}" if key.org_id else ""
    revoked = f" REVOKED {key.revoked_at.ToDatetime():%Y-%m-%d %H:%M}" if key.HasField("revoked_at") else ""
    totp = " totp" if key.totp_enrolled else ""
    return f"{key.key_id}  {role:<8} {key.subject}{org}{totp}{revoked}  {key.name}"


@_rpc_guard
def cmd_keys_create(args: argparse.Namespace) -> int:
    from quorum.v1 import access_pb2

    if args.role == "client" and not args.org:
        print("quorum keys create: a client key needs --org, the organisation it acts for", file=sys.stderr)
        return 2
    settings = _load_settings()
    if args.database_url:
        # Offline: how the first admin key of a new deployment is made.
        import pyotp

        from quorum.crypto import KeyConfigError
        from quorum.security.keys import create_tables
        from quorum.security.principal import Role
        from services.access.audit import offline_key_recorder
        from services.access.handlers import totp_uri

        # With QUORUM_REQUIRE_MFA_ROLES naming admins, the first admin key needs TOTP to get in.
        totp_secret = pyotp.random_base32() if args.totp else None
        try:
            with _offline_keys(settings, args.database_url, seal_totp=args.totp) as (engine, store):
                create_tables(engine)
                record, secret = store.create(
                    Role(args.role),
                    org_id=args.org,
                    subject=args.subject,
                    name=args.name,
                    created_by="quorum keys create",
                    # In the audit trail like a key the service makes, in the same transaction.
                    recorded=offline_key_recorder(engine, "offline:quorum keys create"),
                    totp_secret=totp_secret,
                )
        except KeyConfigError as exc:
            print(f"quorum keys create: {exc}", file=sys.stderr)
            return 2
        print(
            f"created {record.key_id} ({record.role.value} {record.subject}); the key is shown once:", file=sys.stderr
        )
        if totp_secret is not None:
            print(f"TOTP: add this to an authenticator app: {totp_uri(totp_secret, record.subject)}", file=sys.stderr)
        print(secret)
        return 0
    with _client(settings) as client:
        created = client.access.CreateKey(
            access_pb2.CreateKeyRequest(
                role=f"ROLE_{args.role.upper()}",
                org_id=args.org,
                subject=args.subject,
                name=args.name,
                enroll_totp=args.totp,
            ),
            timeout=30,
        )
    print(f"created {_key_line(created.key)}; the key is shown once:", file=sys.stderr)
    if created.totp_uri:
        print(f"TOTP: add this to an authenticator app: {created.totp_uri}", file=sys.stderr)
    print(created.secret)
    return 0


def cmd_keys_new_hash_key(args: argparse.Namespace) -> int:
    from quorum.crypto import new_key_text

    print(new_key_text())
    print(
        "Set it as QUORUM_API_KEY_HASH_KEY on every service and move the old key into "
        "QUORUM_PREVIOUS_API_KEY_HASH_KEYS; keys in use are re-hashed as they are next checked, "
        "and `quorum keys hash-status` counts those still under the old key (docs/security.md).",
        file=sys.stderr,
    )
    return 0


@contextlib.contextmanager
def _offline_keys(
    settings: Settings, database_url: str, *, seal_totp: bool = False
) -> Iterator[tuple[Engine, KeyStore]]:
    """The access database at ``database_url`` and its keys, hashed with the hashing key the
    settings give for that database, and with ``seal_totp`` able to seal TOTP secrets under
    the master key the access service uses. Raises quorum.crypto.KeyConfigError before
    connecting."""
    from quorum.db import make_engine
    from quorum.security.keyhash import load_key_hasher
    from quorum.security.keys import KeyStore
    from services.access.bootstrap import totp_keyring

    scoped = settings.model_copy(update={"access_database_url": database_url})
    hasher = load_key_hasher(scoped)
    box = totp_keyring(scoped, offline=True) if seal_totp else None
    engine = make_engine(database_url)
    try:
        yield engine, KeyStore(engine, hasher, box=box)
    finally:
        engine.dispose()


def cmd_keys_hash_status(args: argparse.Namespace) -> int:
    from quorum.crypto import KeyConfigError
    from quorum.security.keyhash import SCRYPT_SCHEME

    try:
        with _offline_keys(_load_settings(), args.database_url) as (_, store):
            counts = store.hashes_by_hashing_key()
    except KeyConfigError as exc:
        print(f"quorum keys hash-status: {exc}", file=sys.stderr)
        return 2
    hasher = store.hasher
    for under in sorted(counts, key=lambda name: (name != hasher.current_id, name)):
        if under == hasher.current_id:
            what = "the current hashing key"
        elif under in hasher.key_ids:
            what = "a previous hashing key: re-hashed when next checked"
        elif under == SCRYPT_SCHEME:
            what = "scrypt, from before the keyed hash: re-hashed when next checked"
        else:
            what = "a hashing key not configured here: these keys are refused until re-issued"
        print(f"{counts[under]:>8}  {under} ({what})")
    stale = sum(n for under, n in counts.items() if under != hasher.current_id)
    print(f"{stale} keys not revoked are not under the current hashing key {hasher.current_id}")
    return 0


@_rpc_guard
def cmd_keys_list(args: argparse.Namespace) -> int:
    from quorum.v1 import access_pb2

    with _client(_load_settings()) as client:
        reply = client.access.ListKeys(
            access_pb2.ListKeysRequest(org_id=args.org, include_revoked=args.all), timeout=30
        )
    for key in reply.keys:
        print(_key_line(key))
    return 0


@_rpc_guard
def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from quorum.v1 import access_pb2

    with _client(_load_settings()) as client:
        key = client.access.RevokeKey(access_pb2.RevokeKeyRequest(key_id=args.key_id), timeout=30)
    print(_key_line(key))
    return 0


@_rpc_guard
def cmd_keys_set_role(args: argparse.Namespace) -> int:
    from quorum.v1 import access_pb2

    with _client(_load_settings()) as client:
        key = client.access.SetRole(
            access_pb2.SetRoleRequest(key_id=args.key_id, role=f"ROLE_{args.role.upper()}", org_id=args.org),
            timeout=30,
        )
    print(_key_line(key))
    return 0


def _moment(text: str, *, ago: bool) -> dt.datetime:
    """A moment given as ISO 8601 (UTC when no offset is given) or as a duration such as
    30m, 12h or 7d: that long ago (``ago``) or from now. Raises ValueError, or
    OverflowError for a duration that ends outside the years 1 to 9999."""
    import re

    now = dt.datetime.now(dt.UTC)
    relative = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if relative:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[relative.group(2)]
        span = dt.timedelta(**{unit: float(relative.group(1))})
        return now - span if ago else now + span
    moment = dt.datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _timestamp_arg(option: str, text: str, *, ago: bool) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    try:
        moment = _moment(text, ago=ago)
    except OverflowError:
        direction = "back" if ago else "ahead"
        raise SystemExit(f"quorum: {option} {text!r}: too far {direction}: dates run from year 1 to 9999") from None
    except ValueError:
        raise SystemExit(
            f"quorum: {option} {text!r}: give an ISO 8601 time (2025-06-30T18:00Z) or a duration (30m, 12h, 7d)"
        ) from None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@_rpc_guard
def cmd_audit_list(args: argparse.Namespace) -> int:
    from quorum.v1 import access_pb2

    request = access_pb2.ListAuditEventsRequest(
        org_id=args.org, action=args.action, resource=args.resource, page_size=args.limit, page_token=args.page_token
    )
    if args.since:
        request.since.CopyFrom(_timestamp_arg("--since", args.since, ago=True))
    if args.until:
        request.until.CopyFrom(_timestamp_arg("--until", args.until, ago=True))
    with _client(_load_settings()) as client:
        reply = client.access.ListAuditEvents(request, timeout=30)
    for event in reply.events:
        at = event.at.ToDatetime()
        print(
            f"{event.seq:>6} {at:%Y-%m-%d %H:%M:%S} {event.action:<18} {event.resource:<40} "
            f"{event.actor} {event.details_json}"
        )
    if reply.next_page_token:
        # On stderr, so that stdout stays one entry per line.
        print(f"older entries: add --page-token {reply.next_page_token}", file=sys.stderr)
    return 0


@_rpc_guard
def cmd_audit_verify(args: argparse.Namespace) -> int:
    if args.database_url:
        from quorum.db import make_engine
        from services.access.audit import AuditTrail

        engine = make_engine(args.database_url)
        try:
            result = AuditTrail(engine).verify()
        finally:
            engine.dispose()
        ok, entries, bad, problem, head = (
            result.ok,
            result.entries,
            result.first_bad_seq,
            result.problem,
            result.head_hash,
        )
    else:
        from quorum.v1 import access_pb2

        with _client(_load_settings()) as client:
            reply = client.access.VerifyAuditLog(access_pb2.VerifyAuditLogRequest(), timeout=120)
        ok, entries, bad, problem, head = reply.ok, reply.entries, reply.first_bad_seq, reply.problem, reply.head_hash
    if ok:
        print(f"audit trail intact: {entries} entries, head {head}")
        return 0
    print(f"audit trail TAMPERED at entry {bad}: {problem} ({entries} entries checked)")
    return 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quorum", description="Quorum: crowdsourced data labeling.")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole stack on this machine (embedded default)")
    up.add_argument("--no-dashboard", action="store_true", help="do not start the Streamlit dashboard")
    up.add_argument("--home", help="data folder (default: QUORUM_HOME or ~/.quorum)")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run one service, configured by QUORUM_* variables")
    serve.add_argument("service", choices=sorted(BUILDERS))
    serve.set_defaults(func=cmd_serve)

    dash = sub.add_parser("dashboard", help="serve the Streamlit dashboard (reads QUORUM_*_ADDR)")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8501)
    dash.set_defaults(func=cmd_dashboard)

    demo = sub.add_parser("demo", help="a pilot job end to end with a simulated crowd")
    demo.add_argument(
        "--objects",
        type=int,
        default=400,
        help="objects to label (with --task classification, half images and half texts)",
    )
    demo.add_argument(
        "--task",
        choices=DEMO_TASKS,
        default="classification",
        help="classification: an image job and a text job; any other: one job of that kind on generated "
        "data with known truth, its fused labels scored against it (boxes: IoU; multi_label, spans: F1; "
        "keypoints: OKS; segmentation: mask IoU; transcription: word error rate; pairwise: accuracy)",
    )
    demo.add_argument("--workers", type=int, default=60, help="simulated workers")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    demo.add_argument("--dashboard", action="store_true", help="also start the dashboard and print its URL")
    demo.add_argument("--keep", action="store_true", help="keep the demo's data folder")
    demo.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    demo.set_defaults(func=cmd_demo)

    submit = sub.add_parser("submit", help="submit a job: a folder of images or a JSONL/CSV of texts")
    submit.add_argument("path", help="folder of images, or .jsonl/.csv manifest (text, path, id, gold_label)")
    submit.add_argument("--labels", required=True, help="comma-separated label set")
    submit.add_argument("--name", default="")
    submit.add_argument("--instructions", default="")
    submit.add_argument("--gold", help="CSV file,label of known answers for images")
    _add_job_spec_arguments(submit)
    submit.add_argument("--sla-hours", type=float, default=0)
    submit.add_argument("--no-seal", action="store_true", help="leave the job open for more uploads")
    submit.set_defaults(func=cmd_submit)

    quote = sub.add_parser(
        "quote", help="what a job would cost before it is submitted: takes submit's job options, plus the objects"
    )
    quote.add_argument("--objects", type=int, required=True, help="objects you would upload")
    quote.add_argument("--task", choices=TASKS, default="text_classification", help="the job's task type")
    quote.add_argument("--labels", default="", help="comma-separated label set (the price does not depend on it)")
    quote.add_argument(
        "--expected-overlap",
        type=float,
        default=0,
        help="answers per object you expect (default: estimated from the overlap and target confidence)",
    )
    quote.add_argument("--seconds-per-answer", type=int, default=0, help="active seconds per answer (30)")
    quote.add_argument(
        "--annotations-per-object",
        type=float,
        default=None,
        help="boxes, spans, keypoints, ... you expect per object (needed with --price-per-annotation-cents)",
    )
    quote.add_argument("--json", action="store_true", help="print the quote as one JSON object")
    _add_job_spec_arguments(quote)
    quote.set_defaults(func=cmd_quote)

    status = sub.add_parser("status", help="progress, quality and money of a job")
    status.add_argument("job")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    results = sub.add_parser(
        "results", help="download a job's labels as JSONL (a structured label, e.g. boxes, as a JSON object)"
    )
    results.add_argument("job")
    results.add_argument("--out", required=True)
    results.set_defaults(func=cmd_results)

    invoice = sub.add_parser("invoice", help="a job's invoice")
    invoice.add_argument("job")
    invoice.add_argument("--format", choices=("text", "json", "csv", "pdf"), default="text")
    invoice.add_argument("--out", help="write to this file instead of stdout")
    invoice.set_defaults(func=cmd_invoice)

    period = sub.add_parser("period-invoice", help="a client's charges over a period, itemised per job")
    period.add_argument("client")
    period.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD (UTC)")
    period.add_argument("--to", dest="end", required=True, help="day after the last, YYYY-MM-DD (UTC)")
    period.add_argument("--currency", default="", help="needed when the client was charged in several")
    period.add_argument("--format", choices=("text", "json", "csv", "pdf"), default="text")
    period.add_argument("--out", help="write to this file instead of stdout")
    period.set_defaults(func=cmd_period_invoice)

    budget = sub.add_parser("budget", help="set a job's budget cap; the job pauses when it is reached")
    budget.add_argument("job")
    budget.add_argument("--cap-cents", type=int, required=True, help="0 removes the cap")
    budget.set_defaults(func=cmd_budget)

    delete = sub.add_parser("delete", help="delete a job's dataset: media, items and results (not its ledger)")
    delete.add_argument("job")
    delete.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    delete.set_defaults(func=cmd_delete)

    sla = sub.add_parser("sla", help="move or clear a job's SLA deadline (operator and admin keys)")
    sla.add_argument("job")
    change = sla.add_mutually_exclusive_group()
    change.add_argument("--deadline", default="", help="ISO 8601 (UTC unless an offset), or 48h, 7d from now")
    change.add_argument("--clear", action="store_true", help="remove the deadline")
    sla.set_defaults(func=cmd_sla)

    workers = sub.add_parser("workers", help="suspend and reinstate workers (operator and admin keys)")
    workers_sub = workers.add_subparsers(dest="workers_command", required=True)
    ws = workers_sub.add_parser("suspend", help="hand the worker no more tasks and end its live leases")
    ws.add_argument("worker")
    ws.add_argument("--reason", required=True, help="shown to the worker and kept in the audit trail")
    ws.set_defaults(func=cmd_workers_change)
    wr = workers_sub.add_parser(
        "reinstate", help="lift a suspension; also overrides consensus's spam flag until it is lifted"
    )
    wr.add_argument("worker")
    wr.add_argument("--reason", default="", help="a note for the audit trail")
    wr.set_defaults(func=cmd_workers_change)
    wl = workers_sub.add_parser("list", help="workers with a suspension, a spam flag or an override")
    wl.add_argument("worker", nargs="?", default="", help="show this worker only")
    wl.add_argument("--suspended", action="store_true", help="only the workers handed no tasks")
    wl.set_defaults(func=cmd_workers_list)

    payouts = sub.add_parser("payouts", help="worker payouts")
    payouts_sub = payouts.add_subparsers(dest="payouts_command", required=True)
    create = payouts_sub.add_parser("create", help="pay out every worker owed at least the minimum")
    create.add_argument("--currency", default="USD")
    create.add_argument("--minimum-cents", type=int, default=1000, help="minimum payout (default 1000)")
    create.add_argument("--out", help="export file (default <batch id>.csv)")
    create.set_defaults(func=cmd_payouts_create)

    agg = sub.add_parser("aggregate", help="aggregate a CSV of answers offline (no stack needed)")
    agg.add_argument("answers", help="CSV with header task,worker,label")
    agg.add_argument(
        "--method",
        choices=("mv", "wmv", "wawa", "ds", "onecoin", "glad", "mace", "default"),
        default="default",
        help="aggregation method (default: default)",
    )
    agg.add_argument("--out", required=True, help="where to write task,label,confidence")
    agg.add_argument("--known", help="CSV task,label of known answers the method may use")
    agg.add_argument("--gold", help="CSV task,label used only to score accuracy")
    agg.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    agg.set_defaults(func=cmd_aggregate)

    ledger = sub.add_parser("ledger", help="ledger checks and corrections")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    verify = ledger_sub.add_parser("verify", help="check every ledger invariant; non-zero exit on a violation")
    verify.add_argument(
        "--database-url", help="audit this payments database directly (offline), not the running service"
    )
    verify.set_defaults(func=cmd_ledger_verify)
    adjust = ledger_sub.add_parser(
        "adjust",
        help="post a correcting entry (operator and admin keys): credit or charge a client, give or take back a "
        "worker's pay",
        description="Moves --amount-cents from the --credit account to the --debit account as a new posting. "
        "A client's receivable is corrected against platform:revenue or platform:pilot_subsidy (a refund: "
        "--debit platform:revenue --credit client:ID:receivable), a worker's payable against "
        "platform:worker_cost or platform:quality_bonus (pay owed: --debit platform:worker_cost --credit "
        "worker:ID:payable).",
    )
    adjust.add_argument(
        "--request-id", required=True, help="your id for this correction: the same id again posts nothing more"
    )
    adjust.add_argument("--debit", required=True, help="account debited, e.g. platform:revenue")
    adjust.add_argument("--credit", required=True, help="account credited, e.g. client:acme:receivable")
    adjust.add_argument("--amount-cents", type=int, required=True, help="amount in minor units, > 0")
    adjust.add_argument("--currency", default="", help="ISO 4217 (default: the job's, or USD)")
    adjust.add_argument("--job", default="", help="the job corrected; a client's adjustment shows on its invoice")
    adjust.add_argument("--reason", required=True, help="why, in words the client or worker may read")
    adjust.set_defaults(func=cmd_ledger_adjust)

    keys = sub.add_parser("keys", help="API keys (admin keys only)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    kc = keys_sub.add_parser("create", help="issue a key; prints it once, on stdout")
    kc.add_argument("--role", choices=ROLES, required=True)
    kc.add_argument("--org", default="", help="organisation a client key acts for")
    kc.add_argument("--subject", default="", help="worker or reviewer id (default: <role>-<key id>)")
    kc.add_argument("--name", default="", help="a note on whose key this is")
    kc.add_argument("--totp", action="store_true", help="enrol a TOTP second factor (`quorum sign-in`, the dashboard)")
    kc.add_argument(
        "--database-url",
        help="write straight into the access database (the first admin key of a deployment; "
        "with --totp, QUORUM_MASTER_KEY must be the access service's)",
    )
    kc.set_defaults(func=cmd_keys_create)
    kl = keys_sub.add_parser("list", help="list keys (never their secrets)")
    kl.add_argument("--org", default="")
    kl.add_argument("--all", action="store_true", help="include revoked keys")
    kl.set_defaults(func=cmd_keys_list)
    kr = keys_sub.add_parser("revoke", help="revoke a key; every service refuses it within seconds")
    kr.add_argument("key_id")
    kr.set_defaults(func=cmd_keys_revoke)
    ks = keys_sub.add_parser("set-role", help="change a key's role")
    ks.add_argument("key_id")
    ks.add_argument("--role", choices=ROLES, required=True)
    ks.add_argument("--org", default="")
    ks.set_defaults(func=cmd_keys_set_role)
    kn = keys_sub.add_parser("new-hash-key", help="print a fresh random API key hashing key (base64)")
    kn.set_defaults(func=cmd_keys_new_hash_key)
    kh = keys_sub.add_parser(
        "hash-status", help="count the keys under each hashing key (before dropping a previous one)"
    )
    kh.add_argument("--database-url", required=True, help="the access database (read only)")
    kh.set_defaults(func=cmd_keys_hash_status)

    sign_in = sub.add_parser(
        "sign-in", help="sign the key in with its TOTP code; later commands send the session until it expires"
    )
    sign_in.add_argument("--code", help="the code the authenticator app shows now (default: asked for)")
    sign_in.set_defaults(func=cmd_sign_in)
    sign_out = sub.add_parser(
        "sign-out",
        help="end the session `quorum sign-in` stored, and forget it; with none stored, every session of the key",
    )
    sign_out.set_defaults(func=cmd_sign_out)

    audit = sub.add_parser("audit", help="the audit trail (operator and admin keys)")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    al = audit_sub.add_parser("list", help="newest entries first")
    al.add_argument("--org", default="")
    al.add_argument("--action", default="", help="e.g. job.created, key.revoked, payout.made")
    al.add_argument("--resource", default="", help="e.g. job/<id>")
    al.add_argument("--limit", type=int, default=50, help="entries per page (at most 1000)")
    al.add_argument("--page-token", default="", help="the token the previous page printed: older entries")
    al.add_argument("--since", default="", help="from this time: ISO 8601 (UTC unless an offset), or 30m, 12h, 7d ago")
    al.add_argument("--until", default="", help="before this time, in the same forms")
    al.set_defaults(func=cmd_audit_list)
    av = audit_sub.add_parser("verify", help="recompute the hash chain; non-zero exit when tampered")
    av.add_argument("--database-url", help="check this access database directly (offline)")
    av.set_defaults(func=cmd_audit_verify)

    storage = sub.add_parser("storage", help="object store encryption keys")
    storage_sub = storage.add_subparsers(dest="storage_command", required=True)
    rewrap = storage_sub.add_parser(
        "rewrap",
        help="re-wrap every object's data key, and every TOTP secret, under the current master key (media untouched)",
    )
    rewrap.set_defaults(func=cmd_storage_rewrap)
    new_key = storage_sub.add_parser("new-master-key", help="print a fresh random master key (base64)")
    new_key.set_defaults(func=cmd_storage_new_master_key)
    return p


def _add_job_spec_arguments(p: argparse.ArgumentParser) -> None:
    """The job options of `quorum submit`, which `quorum quote` takes too."""
    p.add_argument(
        "--client",
        default="",
        help="the client organisation the job is for (default: a client key's own; with the embedded "
        f"stack's local key, {LOCAL_ORG!r}; other keys must name one)",
    )
    p.add_argument("--min-overlap", type=int, default=3)
    p.add_argument("--max-overlap", type=int, default=5)
    p.add_argument("--target-confidence", type=float, default=0.9)
    p.add_argument("--gold-share", type=float, default=0.1)
    p.add_argument("--price-cents", type=int, default=5, help="price per labeled object")
    p.add_argument("--pay-cents", type=int, default=1, help="worker pay per accepted answer")
    p.add_argument("--price-per-hour-cents", type=int, default=0, help="bill per active hour instead")
    p.add_argument("--pay-per-hour-cents", type=int, default=0, help="pay workers per active hour instead")
    p.add_argument(
        "--price-per-annotation-cents", type=int, default=0, help="added per box, span, keypoint, ... of a label"
    )
    p.add_argument("--budget-cap-cents", type=int, default=0, help="pause the job when charges reach it")
    p.add_argument("--currency", default="USD")
    p.add_argument("--pilot", action="store_true", help="free up to the pilot allowance")
    p.add_argument("--pilot-allowance", type=int, default=0)
    p.add_argument(
        "--expert-review",
        action="store_true",
        help="send objects still below the target at max overlap to a reviewer instead of resolving them",
    )
    p.add_argument("--gold-bonus-cents", type=int, default=0, help="bonus per paid answer for workers accurate on gold")
    p.add_argument("--gold-bonus-threshold", type=float, default=0, help="gold accuracy for the bonus (0.9)")
    p.add_argument("--gold-bonus-min-answers", type=int, default=0, help="gold answers needed first (5)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
