"""Who may call the access service: admins manage keys and roles; operators read the
audit trail; anyone with a key may sign in and out as itself. Signing in and out are the
calls open to a key whose role must otherwise use a session (QUORUM_REQUIRE_MFA_ROLES)."""

from __future__ import annotations

from quorum.security.policy import ACROSS_ORGS, STAFF, ServicePolicy, rule
from quorum.security.principal import Role

from .servicer import SERVICE_NAME

ADMIN_ONLY = {Role.ADMIN: ACROSS_ORGS}
EVERYONE = {role: ACROSS_ORGS for role in Role}

POLICY = ServicePolicy(
    SERVICE_NAME,
    {
        "CreateKey": ADMIN_ONLY,
        "ListKeys": ADMIN_ONLY,
        "RevokeKey": ADMIN_ONLY,
        "SetRole": ADMIN_ONLY,
        # Act on the caller's own key only.
        "SignIn": rule(EVERYONE),
        "SignOut": rule(EVERYONE),
        "ListAuditEvents": STAFF,
        "VerifyAuditLog": STAFF,
    },
    # Ending sessions grants nothing, so a key may end its own without a code.
    open_before_sign_in=frozenset({"SignIn", "SignOut"}),
)
