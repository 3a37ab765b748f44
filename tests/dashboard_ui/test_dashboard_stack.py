"""The dashboard against the real embedded stack: the local user is signed in with no
step, and a client key made through the access service sees its own jobs only."""

from __future__ import annotations

from pathlib import Path

import pytest
from dashboard_apptest import is_gate, run_app, submit_key

from quorum.client import QuorumClient
from quorum.stack import LocalStack
from quorum.v1 import access_pb2, common_pb2, ingest_pb2

pytestmark = pytest.mark.slow


def job_spec(name: str, client_id: str = "") -> common_pb2.JobSpec:
    return common_pb2.JobSpec(
        name=name,
        client_id=client_id,
        text_classification=common_pb2.ClassificationConfig(labels=["yes", "no"]),
        overlap=common_pb2.Overlap(min=3, max=5),
        target_confidence=0.9,
        price_per_object_cents=10,
        pay_per_answer_cents=2,
    )


def test_local_user_and_client_keys_on_the_embedded_stack(
    dashboard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalStack(home=dashboard_home) as stack:
        for name, address in stack.addresses.items():
            monkeypatch.setenv(f"QUORUM_{name.upper()}_ADDR", address)
        with QuorumClient(stack.addresses, api_key=stack.api_key) as admin:
            client_key = admin.create_key(access_pb2.ROLE_CLIENT, org_id="acme", name="dashboard test")
            other = admin.ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=job_spec("Globex job", "globex")))
        with QuorumClient(stack.addresses, api_key=client_key) as acme:
            own = acme.ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=job_spec("Acme job")))

        at = run_app()
        assert not is_gate(at)
        assert "Signed in as the local user (admin)" in at.sidebar.success[0].value
        assert not at.warning, [w.value for w in at.warning]
        assert set(at.dataframe[-1].value["job_id"]) == {own.job_id, other.job_id}

        at.sidebar.button(key="sign_out").click().run()
        assert is_gate(at)

        # A new session would sign the local user in again; this one signed out.
        submit_key(at, client_key)
        assert not at.error, [e.value for e in at.error]
        assert "Signed in as client of acme" in at.sidebar.success[0].value
        assert not at.warning, [w.value for w in at.warning]
        assert list(at.dataframe[-1].value["job_id"]) == [own.job_id]
        at.selectbox(key="job_id").select(own.job_id).run()
        assert not at.exception
        # Services that have not heard of the new job yet may say NOT_FOUND; none refuses the client.
        refusals = ("PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_ARGUMENT")
        assert not [w.value for w in at.warning if any(code in w.value for code in refusals)]
        assert "Not available to your role" in "\n".join(c.value for c in at.caption)
