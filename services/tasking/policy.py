"""Who may call the tasking service: workers on their own sessions and the tasks
leased to them; clients see the progress of their own jobs; staff see everything and
suspend and reinstate workers."""

from __future__ import annotations

from quorum.security.policy import STAFF, Owned, OwnSession, Self, ServicePolicy, rule
from quorum.security.principal import Role

from .servicer import SERVICE_NAME

OWN_SESSION = {Role.WORKER: [OwnSession("session_id")]}

POLICY = ServicePolicy(
    SERVICE_NAME,
    {
        "StartSession": {Role.WORKER: [Self("worker_id")]},
        "GetNextTask": OWN_SESSION,
        "SubmitAnswer": OWN_SESSION,
        "Heartbeat": OWN_SESSION,
        "SkipTask": OWN_SESSION,
        "GetTaskingStats": rule(STAFF, {Role.CLIENT: [Owned("job", "job_id")]}),
        # Managing the crowd is staff's alone.
        "SuspendWorker": STAFF,
        "ReinstateWorker": STAFF,
        "GetWorkerStatus": STAFF,
        "ListWorkerStatuses": STAFF,
    },
)
