"""Quorum operator dashboard: ``streamlit run dashboard/app.py``.

Every figure comes from the services' gRPC APIs (addresses from
``QUORUM_{INGEST,TASKING,CONSENSUS,PAYMENTS}_ADDR``) through
:func:`dashboard.data.load_snapshot`; this module only lays it out. A service
that is down gets a warning and empty figures; the rest of the page still renders.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from dashboard.data import ServiceAddrs, Snapshot, load_snapshot
from dashboard.formatting import MISSING, format_cents, format_count, format_duration, format_percent

ALL_JOBS = ""
JOB_KEY = "job_id"
AUTO_KEY = "auto_refresh"
EVERY_KEY = "refresh_seconds"


def main() -> None:
    st.set_page_config(page_title="Quorum operations", page_icon="📊", layout="wide")
    addrs = ServiceAddrs.from_env()
    with st.sidebar:
        st.header("Refresh")
        auto = st.toggle("Auto-refresh", value=True, key=AUTO_KEY)
        every = st.slider("Every (seconds)", min_value=2, max_value=60, value=5, key=EVERY_KEY, disabled=not auto)
        st.header("Services")
        for name in ServiceAddrs.ENV:
            st.caption(f"{name.capitalize()}: `{getattr(addrs, name)}`")

    st.title("Quorum operations")
    # Only the fragment reruns on the timer, so the sidebar keeps its state between refreshes.
    live = st.fragment(run_every=timedelta(seconds=every) if auto else None)(render_live)
    live(addrs)


def render_live(addrs: ServiceAddrs) -> None:
    """One refresh: read a snapshot for the picked job and render it."""
    job_id = str(st.session_state.get(JOB_KEY) or ALL_JOBS)
    snapshot = load_snapshot(addrs, job_id)

    picker, refresh, stamp = st.columns([4, 1, 2], vertical_alignment="bottom")
    with picker:
        render_job_picker(snapshot)
    with refresh:
        # A click reruns the fragment, which is all a manual refresh needs.
        st.button("Refresh now", width="stretch")
    with stamp:
        st.caption(f"Updated {snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC")

    for problem in snapshot.problems:
        st.warning(problem.message(), icon="⚠️")

    render_progress(snapshot)
    render_workload(snapshot)
    render_throughput(snapshot)
    render_quality(snapshot)
    render_money(snapshot)
    render_workers(snapshot)
    render_jobs(snapshot)


def render_job_picker(snapshot: Snapshot) -> None:
    jobs = snapshot.jobs
    names = dict(zip(jobs["job_id"], jobs["name"], strict=True))
    options = [ALL_JOBS, *names]
    # Keep a picked job selectable even when ListJobs failed, or Streamlit would reset the choice.
    if snapshot.job_id and snapshot.job_id not in names:
        options.append(snapshot.job_id)

    def label(job_id: str) -> str:
        if not job_id:
            return "All jobs"
        name = names.get(job_id)
        return f"{name} ({job_id})" if name else job_id

    st.selectbox("Job", options, format_func=label, key=JOB_KEY)


def render_progress(snapshot: Snapshot) -> None:
    progress = snapshot.progress
    if progress is None:
        st.progress(0.0, text="Progress unknown: it needs both the ingest and the consensus service.")
        return
    st.progress(
        progress,
        text=f"**{format_count(snapshot.resolved)} of {format_count(snapshot.objects)} objects resolved** "
        f"({format_percent(progress)})",
    )


def render_workload(snapshot: Snapshot) -> None:
    t = snapshot.tasking
    cols = st.columns(6)
    cols[0].metric("Backlog", format_count(t and t.backlog), help="Tasks still waiting for answers", border=True)
    cols[1].metric("Active leases", format_count(t and t.active_leases), border=True)
    cols[2].metric("Workers", format_count(t and t.workers), border=True)
    cols[3].metric(
        "Tasks",
        format_count(t and t.tasks),
        help=None if t is None else f"{t.gold_tasks:,} of them gold",
        border=True,
    )
    cols[4].metric("Answers", format_count(t and t.answers), border=True)
    cols[5].metric("Resolved", format_count(snapshot.resolved), border=True)


def render_throughput(snapshot: Snapshot) -> None:
    st.subheader("Throughput per minute")
    frame = snapshot.throughput
    if frame.empty:
        st.caption("No per-minute counts yet.")
        return
    chart = frame.rename(columns={"created": "tasks created", "answered": "answers", "resolved": "objects resolved"})
    st.line_chart(chart, x_label="minute (UTC)", y_label="per minute", height=260)


def render_quality(snapshot: Snapshot) -> None:
    q = snapshot.quality
    # With nothing resolved the percentiles are zeros, not real durations.
    has_ttr = q is not None and q.resolved > 0
    ttr_col, quality_col = st.columns([3, 4])
    with ttr_col:
        st.subheader("Time to resolution")
        cols = st.columns(3)
        for col, label, seconds in zip(
            cols,
            ("p50", "p90", "p99"),
            (q.ttr_p50_seconds, q.ttr_p90_seconds, q.ttr_p99_seconds) if q and has_ttr else (None,) * 3,
            strict=True,
        ):
            col.metric(label, format_duration(seconds), border=True)
    with quality_col:
        st.subheader("Quality")
        cols = st.columns(4)
        cols[0].metric(
            "Agreement",
            format_percent(q and q.agreement),
            help="Mean share of a resolved object's answers that agree with its label",
            border=True,
        )
        cols[1].metric(
            "Accuracy on gold",
            format_percent(q.gold_accuracy) if q and q.gold_answers else MISSING,
            help=None if q is None else f"{q.gold_answers:,} gold answers",
            border=True,
        )
        cols[2].metric(
            "Estimated accuracy",
            format_percent(q and q.estimated_accuracy),
            help="Mean confidence of resolved labels: the expected share that is right",
            border=True,
        )
        cols[3].metric(
            "Low confidence",
            format_count(q and q.low_confidence),
            help="Resolved below the job's target confidence",
            border=True,
        )


def render_money(snapshot: Snapshot) -> None:
    st.subheader("Money")
    m = snapshot.money
    currency = m.currency if m else "USD"
    cols = st.columns(4)
    cols[0].metric(
        "Billed",
        format_cents(m and m.billed_cents, currency),
        help=None if m is None else f"{m.objects_billed:,} objects billed",
        border=True,
    )
    cols[1].metric(
        "Paid to workers",
        format_cents(m and m.paid_cents, currency),
        help=None if m is None else f"{m.answers_paid:,} answers paid",
        border=True,
    )
    cols[2].metric("Margin", format_cents(m and m.margin_cents, currency), border=True)
    cols[3].metric(
        "Pilot subsidy",
        format_cents(m and m.pilot_subsidy_cents, currency),
        help="Price of pilot objects given away",
        border=True,
    )


def render_workers(snapshot: Snapshot) -> None:
    st.subheader("Workers")
    if snapshot.workers.empty:
        st.caption("No workers yet." if snapshot.quality is not None else "Worker figures unavailable.")
        return
    st.dataframe(
        snapshot.workers,
        hide_index=True,
        column_config={
            "worker_id": st.column_config.TextColumn("Worker"),
            "answers": st.column_config.NumberColumn("Answers", format="localized"),
            "gold_answers": st.column_config.NumberColumn("Gold answers", format="localized"),
            "gold_accuracy": st.column_config.NumberColumn("Gold accuracy", format="percent"),
            "reliability": st.column_config.ProgressColumn(
                "Reliability", format="percent", min_value=0.0, max_value=1.0
            ),
            "agreement": st.column_config.NumberColumn("Agreement", format="percent"),
        },
    )


def render_jobs(snapshot: Snapshot) -> None:
    st.subheader("Jobs")
    jobs: pd.DataFrame = snapshot.scoped_jobs()
    if jobs.empty:
        st.caption("No jobs." if not any(p.service == "Ingest" for p in snapshot.problems) else "Jobs unavailable.")
        return
    st.dataframe(
        jobs,
        hide_index=True,
        column_config={
            "job_id": st.column_config.TextColumn("Job"),
            "name": st.column_config.TextColumn("Name"),
            "client_id": st.column_config.TextColumn("Client"),
            "state": st.column_config.TextColumn("State"),
            "objects": st.column_config.NumberColumn("Objects", format="localized"),
            "gold": st.column_config.NumberColumn("Gold", format="localized"),
            "rejected": st.column_config.NumberColumn("Rejected", format="localized"),
            "sla_deadline": st.column_config.DatetimeColumn("SLA deadline", format="YYYY-MM-DD HH:mm z"),
            "created_at": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm z"),
        },
    )


if __name__ == "__main__":
    main()
