"""Who may call the consensus service: clients read their own jobs' results and quality;
reviewers resolve review tasks as themselves; staff see every job and every worker.
Workers never see results or other workers' answers."""

from __future__ import annotations

from quorum.security.policy import ACROSS_ORGS, STAFF, Owned, Self, ServicePolicy, rule
from quorum.security.principal import Role

from .servicer import SERVICE_NAME

OWN_JOB = [Owned("job", "job_id")]

POLICY = ServicePolicy(
    SERVICE_NAME,
    {
        "GetResult": rule(STAFF, {Role.CLIENT: [Owned("task", "task_id", missing_as="result of task")]}),
        "ExportResults": rule(STAFF, {Role.CLIENT: OWN_JOB}),
        "GetJobQuality": rule(STAFF, {Role.CLIENT: OWN_JOB}),
        "ListWorkers": STAFF,
        "ListReviewTasks": rule(STAFF, {Role.REVIEWER: ACROSS_ORGS}),
        "SubmitReview": {Role.REVIEWER: [Self("reviewer_id")], Role.ADMIN: ACROSS_ORGS},
    },
)
