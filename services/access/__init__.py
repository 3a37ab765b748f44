"""The access service: API keys, roles, sign-in with a second factor, and the audit trail."""
