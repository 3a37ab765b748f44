"""Ingest: opens jobs, takes in their objects (uploaded files or manifests),
stores the content by its SHA-256 and turns every accepted object into
micro-tasks, announced as JobCreated, TaskCreated and JobSealed events."""
