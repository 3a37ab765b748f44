"""Garbage in: every gRPC method of every service, fed requests that hypothesis builds
from the proto descriptors (random values, oversized strings and bytes, unknown and
real ids, out-of-range enum values, missing fields, odd timestamps), against the real
services in their own processes.

Every call must end with a deliberate status (OK or one of the domain codes), never
UNKNOWN or INTERNAL, and every service must still be SERVING afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message as pb_message
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorum.client import QuorumClient, jsonl
from quorum.rpc import channel
from quorum.security.policy import ServicePolicy
from quorum.security.principal import Role
from quorum.settings import ServiceName
from quorum.stack import LocalStack
from quorum.v1 import access_pb2, common_pb2, consensus_pb2, ingest_pb2, payments_pb2, tasking_pb2
from services.access.policy import POLICY as ACCESS_POLICY
from services.consensus.policy import POLICY as CONSENSUS_POLICY
from services.ingest.policy import POLICY as INGEST_POLICY
from services.payments.policy import POLICY as PAYMENTS_POLICY
from services.tasking.policy import POLICY as TASKING_POLICY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
MODULES: dict[ServiceName, Any] = {
    "ingest": ingest_pb2,
    "tasking": tasking_pb2,
    "consensus": consensus_pb2,
    "payments": payments_pb2,
    "access": access_pb2,
}
SERVICE_OF = {"ingest": "IngestService", "tasking": "TaskingService", "consensus": "ConsensusService"}
SERVICE_OF["payments"] = "PaymentsService"
SERVICE_OF["access"] = "AccessService"
POLICIES: dict[ServiceName, ServicePolicy] = {
    "ingest": INGEST_POLICY,
    "tasking": TASKING_POLICY,
    "consensus": CONSENSUS_POLICY,
    "payments": PAYMENTS_POLICY,
    "access": ACCESS_POLICY,
}
FUZZ_WORKER = "fuzzer"
# Examples per method; QUORUM_FUZZ_EXAMPLES=500 for a longer hunt.
EXAMPLES = int(os.environ.get("QUORUM_FUZZ_EXAMPLES", "40"))
OVERSIZED = 1_000_000

# Ids of real things, filled in by the fixture, so that fuzzed requests reach past "not found".
KNOWN_IDS: list[str] = []
# The keys the fuzzer calls with, by role, filled in by the fixture.
KEYS: dict[Role, str] = {}


def _ids() -> st.SearchStrategy[str]:
    return st.sampled_from(KNOWN_IDS) if KNOWN_IDS else st.just("")


def _strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        st.text(max_size=40),
        st.deferred(_ids),
        st.sampled_from(["x" * 201, "x" * OVERSIZED, "../../etc/passwd", "\x00", "job_\u202e", "%s%n", "-1", "NaN"]),
    )


def _bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"\xff" * OVERSIZED, b'{"id": 1}\n{bad']),
    )


_INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (low, high, -1, 0, 1, 2, 3, 1000, 2**31 - 1) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == d.FieldDescriptor.TYPE_STRING:
        return _strings()
    if kind == d.FieldDescriptor.TYPE_BYTES:
        return _bytes()
    if kind == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (d.FieldDescriptor.TYPE_FLOAT, d.FieldDescriptor.TYPE_DOUBLE):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if kind == d.FieldDescriptor.TYPE_FLOAT else 64)
    if kind == d.FieldDescriptor.TYPE_ENUM:
        # Proto3 enums are open: a number no enum value names arrives as is.
        assert field.enum_type is not None
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-5, 1000))
    low, high = _INT_RANGES[kind]
    return _integers(low, high)


def messages(descriptor: d.Descriptor, depth: int = 0) -> st.SearchStrategy[pb_message.Message]:
    """Messages of ``descriptor`` with any subset of fields set, at most one per oneof."""
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n),
            _integers(-(2**63), 2**63 - 1),
            _integers(-(2**31), 2**31 - 1),
        )
    plain = [f for f in descriptor.fields if f.containing_oneof is None or f.containing_oneof.name.startswith("_")]
    oneofs = [o for o in descriptor.oneofs if not o.name.startswith("_")]
    values: dict[str, st.SearchStrategy[Any]] = {}
    for field in plain:
        strategy = _field_value(field, depth)
        if strategy is not None:
            values[field.name] = st.one_of(st.none(), strategy)
    choices = []
    for oneof in oneofs:
        members = [(f, _field_value(f, depth)) for f in oneof.fields]
        options = [st.tuples(st.just(f.name), s) for f, s in members if s is not None]
        choices.append(st.one_of(st.none(), *options) if options else st.none())

    def build(fields: dict[str, Any], picked: list[tuple[str, Any] | None]) -> pb_message.Message:
        message = cls()
        for name, value in [*fields.items(), *(p for p in picked if p is not None)]:
            if value is not None:
                _assign(message, descriptor.fields_by_name[name], value)
        return message

    return st.builds(build, st.fixed_dictionaries(values), st.tuples(*choices).map(list))


def _field_value(field: d.FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.type == d.FieldDescriptor.TYPE_MESSAGE:
        if depth >= 3 or field.message_type is None:
            return None
        inner = messages(field.message_type, depth + 1)
        if field.message_type.GetOptions().map_entry:
            return st.lists(inner, max_size=4)
        return st.lists(inner, max_size=4) if _repeated(field) else inner
    scalar = _scalar(field)
    if _repeated(field):
        return st.one_of(st.lists(scalar, max_size=6), st.just([]))
    return scalar


def _repeated(field: d.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _assign(message: pb_message.Message, field: d.FieldDescriptor, value: Any) -> None:
    if field.type == d.FieldDescriptor.TYPE_MESSAGE:
        target = getattr(message, field.name)
        assert field.message_type is not None
        if field.message_type.GetOptions().map_entry:
            for entry in value:
                key, item = entry.key, entry.value
                if field.message_type.fields_by_name["value"].type == d.FieldDescriptor.TYPE_MESSAGE:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif _repeated(field):
            target.extend(value)
        else:
            target.CopyFrom(value)
        return
    if _repeated(field):
        getattr(message, field.name).extend(value)
    else:
        setattr(message, field.name, value)


def _methods() -> list[tuple[ServiceName, d.MethodDescriptor]]:
    found: list[tuple[ServiceName, d.MethodDescriptor]] = []
    for service, module in MODULES.items():
        descriptor = module.DESCRIPTOR.services_by_name[SERVICE_OF[service]]
        found.extend((service, method) for method in descriptor.methods)
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # The fuzzer calls faster than one key may: without the rate limit every request reaches a handler.
    no_rate_limit = {"QUORUM_RATE_LIMIT_PER_SECOND": "0"}
    with LocalStack(home=tmp_path_factory.mktemp("fuzz"), extra_env=no_rate_limit) as running:
        with QuorumClient(running.addresses, api_key=running.api_key) as client:
            spec = common_pb2.JobSpec(
                name="fuzz",
                client_id="acme",
                overlap=common_pb2.Overlap(min=1, max=2),
                price_per_object_cents=5,
                pay_per_answer_cents=1,
            )
            spec.text_classification.CopyFrom(common_pb2.ClassificationConfig(labels=["a", "b"]))
            job = client.ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=spec)).job_id
            client.import_manifest(
                job, jsonl([{"id": f"o{i}", "text": f"text {i}"} for i in range(5)]), ingest_pb2.MANIFEST_FORMAT_JSONL
            )
            worker_key = client.issue_worker_keys([FUZZ_WORKER])[FUZZ_WORKER]
            with QuorumClient(running.addresses, api_key=worker_key) as worker:
                start = tasking_pb2.StartSessionRequest(worker_id=FUZZ_WORKER)
                session = worker.tasking.StartSession(start).session_id
            # RevokeKey and SetRole get a key of their own to reach, never one the fuzzer calls with.
            target = client.access.CreateKey(
                access_pb2.CreateKeyRequest(role=access_pb2.ROLE_CLIENT, org_id="acme", name="fuzz target")
            ).key.key_id
            KNOWN_IDS.extend([job, session, FUZZ_WORKER, "acme", target])
            KEYS.update({Role.ADMIN: running.api_key, Role.WORKER: worker_key})
        yield running
    KNOWN_IDS.clear()
    KEYS.clear()


def _key_for(service: ServiceName, method: d.MethodDescriptor) -> str:
    """The admin key, so that requests reach the handlers; for the RPCs only workers may
    call (tasking's worker API), the fuzzing worker's key."""
    rule = POLICIES[service].rule_for(method.name)
    assert rule is not None, f"{method.full_name} has no access policy"
    role = Role.ADMIN if Role.ADMIN in rule else Role.WORKER
    assert role in rule, f"{method.full_name} is open to neither admin nor worker keys"
    return KEYS[role]


def _call(ch: grpc.Channel, service: ServiceName, method: d.MethodDescriptor) -> Callable[[Any], grpc.StatusCode]:
    path = f"/{method.containing_service.full_name}/{method.name}"
    output = message_factory.GetMessageClass(method.output_type)

    def serialize(message: pb_message.Message) -> bytes:
        return message.SerializeToString()

    def call(request: Any) -> grpc.StatusCode:
        try:
            if method.client_streaming:
                ch.stream_unary(path, request_serializer=serialize, response_deserializer=output.FromString)(
                    iter(request), timeout=30
                )
            elif method.server_streaming:
                stream = ch.unary_stream(path, request_serializer=serialize, response_deserializer=output.FromString)
                for _ in stream(request, timeout=30):
                    pass
            else:
                ch.unary_unary(path, request_serializer=serialize, response_deserializer=output.FromString)(
                    request, timeout=30
                )
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    return call


def _serving(address: str) -> bool:
    with channel(address) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.parametrize(("service", "method"), _methods(), ids=lambda v: getattr(v, "name", v))
def test_garbage_gets_a_deliberate_status(stack: LocalStack, service: ServiceName, method: d.MethodDescriptor) -> None:
    requests = messages(method.input_type)
    if method.client_streaming:
        requests = st.lists(requests, min_size=0, max_size=3)  # type: ignore[assignment]
    seen: dict[str, int] = {}
    with channel(stack.address(service), api_key=_key_for(service, method)) as ch:
        call = _call(ch, service, method)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        )
        @given(requests)
        def garbage(request: Any) -> None:
            code = call(request)
            seen[code.name] = seen.get(code.name, 0) + 1
            assert code in DELIBERATE, f"{method.full_name} answered {code.name} to {str(request)[:500]!r}"

        garbage()
    print(f"{method.full_name}: {seen}")
    for name in MODULES:
        assert _serving(stack.address(name)), f"{name} is not SERVING after fuzzing {method.full_name}"
    assert stack.check_alive() == []
