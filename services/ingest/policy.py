"""Who may call the ingest service: clients on their own organisation's jobs, staff
across organisations."""

from __future__ import annotations

from quorum.security.policy import ACROSS_ORGS, STAFF, Owned, OwnOrg, ServicePolicy, rule
from quorum.security.principal import Role

from .servicer import SERVICE_NAME

OWN_JOB = [Owned("job", "job_id")]

POLICY = ServicePolicy(
    SERVICE_NAME,
    {
        "CreateJob": {Role.CLIENT: [OwnOrg("spec.client_id")], Role.ADMIN: ACROSS_ORGS},
        "GetJob": rule(STAFF, {Role.CLIENT: OWN_JOB}),
        "ListJobs": rule(STAFF, {Role.CLIENT: [OwnOrg("client_id")]}),
        # Only the first message of an upload names the job; every one that does is checked.
        "UploadFiles": {Role.CLIENT: [Owned("job", "job_id", required=False)], Role.ADMIN: ACROSS_ORGS},
        "ImportManifest": {Role.CLIENT: OWN_JOB, Role.ADMIN: ACROSS_ORGS},
        "SealJob": {Role.CLIENT: OWN_JOB, Role.ADMIN: ACROSS_ORGS},
        # Purges the job's media, items and results; the ledger keeps its postings.
        "DeleteJob": {Role.CLIENT: OWN_JOB, Role.ADMIN: ACROSS_ORGS},
        # Operators manage SLAs; a client's deadline is part of what it ordered.
        "SetJobSla": STAFF,
    },
)
