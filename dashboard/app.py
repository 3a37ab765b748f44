"""Quorum dashboard: ``streamlit run dashboard/app.py``.

Nothing renders before sign-in: a form takes an API key, checks it with the access
service and, when the key has TOTP enrolled (or its role must use one: see
:func:`dashboard.auth.totp_roles`), asks for the code. A sign-in with a code starts a
session in the access service, and the page reads with the session's token instead of
the key. On the embedded stack the local user's key (``QUORUM_HOME/credentials``, or
``QUORUM_API_KEY``) signs in by itself when it needs no code. The credential lives only
in the session state: never in the URL, the page or a message.

Every figure comes from the services' gRPC APIs (addresses from
``QUORUM_{INGEST,TASKING,CONSENSUS,PAYMENTS,ACCESS}_ADDR``) through
:func:`dashboard.data.load_snapshot`, with the signed-in key; this module only lays it
out. A service that is down gets a warning and empty figures; the rest of the page
still renders. A client key sees its own organisation's jobs, one job at a time.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.auth import CodeNeeded, SignInRefused, Viewer, sign_in, sign_out, totp_roles
from dashboard.data import JOB_SCOPED_PARTS, WORKERS, ServiceAddrs, Snapshot, load_snapshot
from dashboard.formatting import MISSING, format_cents, format_count, format_duration, format_percent
from quorum.security.keys import is_session_token
from quorum.settings import Settings

ALL_JOBS = ""
JOB_KEY = "job_id"
AUTO_KEY = "auto_refresh"
EVERY_KEY = "refresh_seconds"
SERIES_LABELS = {"created": "tasks created", "answered": "answers", "resolved": "objects resolved"}

# Session state of the sign-in. The credential the page reads with (the key, or the token
# of the session its TOTP sign-in started) is kept under API_KEY only, for this browser session.
API_KEY = "signed_in_key"
VIEWER = "viewer"
# How the session signed in: "form", "local" (credentials file) or "env" (QUORUM_API_KEY).
SIGNED_IN_VIA = "signed_in_via"
# A valid key waiting for its TOTP code.
PENDING_KEY = "pending_key"
# The local user's key is tried once per session, and never again after signing out.
LOCAL_TRIED = "local_sign_in_tried"
NOTICE = "sign_in_notice"
# Why the last attempt was refused, shown once.
REFUSAL = "sign_in_refusal"
KEY_INPUT = "api_key_input"
CODE_INPUT = "totp_code_input"


def main() -> None:
    st.set_page_config(page_title="Quorum operations", page_icon="📊", layout="wide")
    addrs = ServiceAddrs.from_env()
    settings = Settings()
    viewer = signed_in_viewer(addrs, settings)
    if viewer is None:
        return
    with st.sidebar:
        render_account(viewer, addrs)
        st.header("Refresh")
        auto = st.toggle("Auto-refresh", value=True, key=AUTO_KEY)
        every = st.slider("Every (seconds)", min_value=2, max_value=60, value=5, key=EVERY_KEY, disabled=not auto)
        st.header("Services")
        for name in ServiceAddrs.ENV:
            st.caption(f"{name.capitalize()}: `{getattr(addrs, name)}`")

    st.title("Quorum operations" if viewer.staff else "Quorum")
    # Only the fragment reruns on the timer: the title and sidebar are not redrawn every few seconds.
    live = st.fragment(run_every=timedelta(seconds=every) if auto else None)(render_live)
    live(addrs, viewer)


def signed_in_viewer(addrs: ServiceAddrs, settings: Settings) -> Viewer | None:
    """The signed-in viewer; otherwise renders the sign-in gate (and nothing else) and returns None."""
    state = st.session_state
    if VIEWER in state and API_KEY in state:
        viewer: Viewer = state[VIEWER]
        return viewer
    if not state.get(LOCAL_TRIED):
        state[LOCAL_TRIED] = True
        viewer_or_none = sign_in_local_user(addrs, settings)
        if viewer_or_none is not None:
            return viewer_or_none

    st.title("Quorum")
    if NOTICE in state:
        st.warning(state[NOTICE], icon="🔒")
    if REFUSAL in state:
        st.error(state.pop(REFUSAL))
    if PENDING_KEY in state:
        render_code_form(addrs, settings)
    else:
        render_key_form(addrs, settings)
    return None


def _start_session(viewer: Viewer, api_key: str, via: str) -> None:
    state = st.session_state
    state[API_KEY] = viewer.session_token or api_key
    state[VIEWER] = viewer
    state[SIGNED_IN_VIA] = via
    for stale in (PENDING_KEY, NOTICE):
        state.pop(stale, None)


def end_session(notice: str | None = None) -> None:
    """Forgets the key and everything read with it; the local user is not signed in again."""
    state = st.session_state
    for name in (API_KEY, VIEWER, SIGNED_IN_VIA, PENDING_KEY, JOB_KEY):
        state.pop(name, None)
    state[LOCAL_TRIED] = True
    if notice:
        state[NOTICE] = notice


def sign_out_clicked(addrs: ServiceAddrs) -> None:
    """Ends the access service's session too, so the token is refused even if it was copied."""
    credential = st.session_state.get(API_KEY)
    if credential is not None and is_session_token(str(credential)):
        sign_out(addrs.access, str(credential))
    end_session()


def listens_on_this_machine_only() -> bool:
    """Whether the dashboard is served on a loopback address (Streamlit listens on every
    interface unless it is given one)."""
    address = str(st.get_option("server.address") or "")
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def sign_in_local_user(addrs: ServiceAddrs, settings: Settings) -> Viewer | None:
    """Signs in with the embedded stack's local key (or ``QUORUM_API_KEY``) when it needs
    no second factor; a key that needs one, or is refused, leaves the form to the user.
    Only while the dashboard listens on loopback: served to the network, the machine's
    key would sign in everyone who can reach the page."""
    if settings.dashboard_require_totp:
        return None
    api_key = settings.client_api_key()
    if api_key is None:
        return None
    who = "with QUORUM_API_KEY" if settings.api_key is not None else "as the local user"
    if not listens_on_this_machine_only():
        st.session_state[NOTICE] = (
            f"Not signed in {who} automatically: this dashboard is served beyond this machine. Sign in with a key."
        )
        return None
    try:
        outcome = sign_in(addrs.access, api_key, totp_roles=totp_roles(settings))
    except SignInRefused as refused:
        st.session_state[NOTICE] = f"Could not sign in {who}. {refused}"
        return None
    if isinstance(outcome, CodeNeeded):
        return None
    _start_session(outcome, api_key, "env" if settings.api_key is not None else "local")
    return outcome


def render_key_form(addrs: ServiceAddrs, settings: Settings) -> None:
    with st.form("sign_in", clear_on_submit=True):
        st.subheader("Sign in")
        st.text_input("API key", type="password", key=KEY_INPUT, placeholder="qk_…", help="From `quorum keys create`")
        st.form_submit_button(
            "Sign in", type="primary", key="sign_in_submit", on_click=submit_key, args=(addrs, settings)
        )


def render_code_form(addrs: ServiceAddrs, settings: Settings) -> None:
    with st.form("second_factor", clear_on_submit=True):
        st.subheader("Second factor")
        st.caption("This key has TOTP enrolled: enter the code your authenticator app shows now.")
        st.text_input("6-digit code", max_chars=6, key=CODE_INPUT)
        st.form_submit_button("Verify", type="primary", key="totp_submit", on_click=submit_code, args=(addrs, settings))
    st.button("Use another key", on_click=end_session, key="use_another_key")


# The submit callbacks run before the page does, the one moment a widget's value can be
# emptied: what was typed stays in no widget once it has been tried.
def submit_key(addrs: ServiceAddrs, settings: Settings) -> None:
    state = st.session_state
    entered = str(state.get(KEY_INPUT, "")).strip()
    state[KEY_INPUT] = ""
    try:
        outcome = sign_in(addrs.access, entered, totp_roles=totp_roles(settings))
    except SignInRefused as refused:
        state[REFUSAL] = str(refused)
        return
    if isinstance(outcome, CodeNeeded):
        state[PENDING_KEY] = entered
    else:
        _start_session(outcome, entered, "form")


def submit_code(addrs: ServiceAddrs, settings: Settings) -> None:
    state = st.session_state
    code = str(state.get(CODE_INPUT, ""))
    state[CODE_INPUT] = ""
    pending = str(state[PENDING_KEY])
    try:
        outcome = sign_in(addrs.access, pending, code, totp_roles=totp_roles(settings))
    except SignInRefused as refused:
        state[REFUSAL] = str(refused)
        return
    if isinstance(outcome, CodeNeeded):  # only for an empty code
        state[REFUSAL] = "Enter the 6-digit code your authenticator app shows for this key."
        return
    _start_session(outcome, pending, "form")


def render_account(viewer: Viewer, addrs: ServiceAddrs) -> None:
    via = st.session_state.get(SIGNED_IN_VIA)
    if via == "local":
        st.success(f"Signed in as the local user ({viewer.role.value})")
    elif via == "env":
        st.success(f"Signed in with QUORUM_API_KEY ({viewer.role.value})")
    else:
        st.success(f"Signed in as {viewer.describe()}")
    organisation = viewer.org_id or ("every organisation" if viewer.staff else "none")
    st.caption(f"Role: {viewer.role.value} · Organisation: {organisation}")
    if viewer.totp_verified:
        st.caption("Second factor: TOTP verified")
    st.button("Sign out", on_click=sign_out_clicked, args=(addrs,), key="sign_out")


def render_live(addrs: ServiceAddrs, viewer: Viewer) -> None:
    """One refresh: read a snapshot for the picked job and render it."""
    api_key = st.session_state.get(API_KEY)
    if api_key is None:  # signed out in another part of the page
        st.rerun(scope="app")
    job_id = str(st.session_state.get(JOB_KEY) or ALL_JOBS)
    snapshot = load_snapshot(addrs, api_key, job_id, staff=viewer.staff)
    if any(p.code == "UNAUTHENTICATED" for p in snapshot.problems):
        if is_session_token(api_key):
            end_session("Your sign-in has ended (it expired, or the key was revoked): sign in again.")
        else:
            end_session("Your key is no longer accepted (revoked?): sign in again.")
        st.rerun(scope="app")

    picker, refresh, stamp = st.columns([4, 1, 2], vertical_alignment="bottom")
    with picker:
        render_job_picker(snapshot, viewer)
    with refresh:
        # A click reruns the fragment, which is all a manual refresh needs.
        st.button("Refresh now", width="stretch")
    with stamp:
        st.caption(f"Updated {snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC")

    for problem in snapshot.problems:
        st.warning(problem.message(), icon="⚠️")

    if snapshot.withheld >= JOB_SCOPED_PARTS:
        st.info("Pick one of your jobs to see its progress, quality and money.", icon="👆")
    else:
        render_progress(snapshot)
        render_workload(snapshot)
        render_throughput(snapshot)
        render_quality(snapshot)
        render_money(snapshot)
    render_workers(snapshot)
    render_jobs(snapshot)


def render_job_picker(snapshot: Snapshot, viewer: Viewer) -> None:
    jobs = snapshot.jobs
    names = dict(zip(jobs["job_id"], jobs["name"], strict=True))
    options = [ALL_JOBS, *names]
    # Keep a picked job selectable even when ListJobs failed, or Streamlit would reset the choice.
    if snapshot.job_id and snapshot.job_id not in names:
        options.append(snapshot.job_id)

    def label(job_id: str) -> str:
        if not job_id:
            return "All jobs" if viewer.staff else "All my jobs"
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


def render_tiles(tiles: list[tuple[str, str, str | None]]) -> None:
    """One row of metrics, each ``(label, value, help)``."""
    for col, (label, value, help_text) in zip(st.columns(len(tiles)), tiles, strict=True):
        col.metric(label, value, help=help_text, border=True)


def render_workload(snapshot: Snapshot) -> None:
    t = snapshot.tasking
    render_tiles(
        [
            ("Backlog", format_count(t.backlog) if t else MISSING, "Tasks still waiting for answers"),
            ("Active leases", format_count(t.active_leases) if t else MISSING, "Tasks a worker holds now"),
            ("Workers", format_count(t.workers) if t else MISSING, None),
            (
                "Tasks",
                format_count(t.tasks) if t else MISSING,
                f"{t.gold_tasks:,} of them gold" if t else None,
            ),
            ("Answers", format_count(t.answers) if t else MISSING, None),
            ("Resolved", format_count(snapshot.resolved), "Objects with a final label"),
        ]
    )


def render_throughput(snapshot: Snapshot) -> None:
    st.subheader("Throughput per minute")
    frame = snapshot.throughput
    if frame.empty:
        st.caption("No per-minute counts yet.")
        return
    order = [SERIES_LABELS[c] for c in frame.columns]
    long = frame.rename(columns=SERIES_LABELS).reset_index().melt("minute", var_name="series", value_name="count")
    # A UTC scale: the browser would otherwise shift the minutes into its own time zone.
    minute = alt.X(
        "minute:T",
        title="minute (UTC)",
        scale=alt.Scale(type="utc"),
        # At least a minute between ticks: Vega would otherwise tick every few seconds and repeat labels.
        axis=alt.Axis(format="%H:%M", tickMinStep=60_000),
    )
    chart = (
        alt.Chart(long)
        # Dots only while there are few enough minutes to tell them apart.
        .mark_line(point=len(frame) <= 60)
        .encode(
            x=minute,
            y=alt.Y("count:Q", title="per minute"),
            color=alt.Color("series:N", scale=alt.Scale(domain=order), legend=alt.Legend(orient="top", title=None)),
            tooltip=[
                alt.Tooltip("minute:T", title="minute (UTC)", format="%Y-%m-%d %H:%M", formatType="utc"),
                alt.Tooltip("series:N"),
                alt.Tooltip("count:Q", format=","),
            ],
        )
        .properties(height=260)
    )
    st.altair_chart(chart)


def render_quality(snapshot: Snapshot) -> None:
    q = snapshot.quality
    st.subheader("Quality")
    render_tiles(
        [
            (
                "Agreement",
                format_percent(q.agreement) if q else MISSING,
                "Mean share of a resolved object's answers that agree with its label",
            ),
            (
                "Accuracy on gold",
                format_percent(q.gold_accuracy) if q and q.gold_answers else MISSING,
                f"Over {q.gold_answers:,} gold answers" if q else None,
            ),
            (
                "Estimated accuracy",
                format_percent(q.estimated_accuracy) if q else MISSING,
                "Mean confidence of resolved labels: the expected share that is right",
            ),
            (
                "Low confidence",
                format_count(q.low_confidence) if q else MISSING,
                "Resolved below the job's target confidence",
            ),
        ]
    )
    render_tiles(
        [
            (
                "Krippendorff's alpha",
                f"{q.krippendorff_alpha:.3f}" if q else MISSING,
                "Chance-corrected agreement between workers: 1 perfect, 0 chance",
            ),
            (
                "Fleiss' kappa",
                f"{q.fleiss_kappa:.3f}" if q else MISSING,
                "Chance-corrected agreement, generalised to varying answers per object",
            ),
        ]
    )
    st.subheader("Time to resolution")
    # With nothing resolved the percentiles are zeros, not real durations.
    ttr = (q.ttr_p50_seconds, q.ttr_p90_seconds, q.ttr_p99_seconds) if q and q.resolved else (None,) * 3
    render_tiles(
        [
            (
                label,
                format_duration(seconds),
                f"{share} of objects are resolved within this time from creation",
            )
            for label, share, seconds in zip(("p50", "p90", "p99"), ("Half", "90%", "99%"), ttr, strict=True)
        ]
    )


def render_money(snapshot: Snapshot) -> None:
    st.subheader("Money")
    m = snapshot.money
    if m is None:
        render_tiles([(label, MISSING, None) for label in ("Billed", "Paid to workers", "Margin", "Pilot subsidy")])
        return
    if m.paused:
        st.error(f"Job paused: {m.pause_reason or 'budget cap reached'}. Raise the cap to resume it.")
    render_tiles(
        [
            ("Billed", format_cents(m.billed_cents, m.currency), f"{m.objects_billed:,} objects billed"),
            (
                "Paid to workers",
                format_cents(m.paid_cents, m.currency),
                f"{m.answers_paid:,} answers paid, {m.answers_unpaid:,} unpaid (spam or rejected by consensus)",
            ),
            ("Margin", format_cents(m.margin_cents, m.currency), "Billed minus paid to workers"),
            (
                "Pilot subsidy",
                format_cents(m.pilot_subsidy_cents, m.currency),
                "Price of pilot objects given away",
            ),
        ]
    )


def render_workers(snapshot: Snapshot) -> None:
    st.subheader("Workers")
    if WORKERS in snapshot.withheld:
        st.caption("Not available to your role: workers label for every organisation.")
        return
    if snapshot.workers.empty:
        failed = any(p.service == "Consensus" for p in snapshot.problems)
        st.caption("Workers unavailable." if failed else "No workers yet.")
        return
    # Shares as percentages with one fixed precision; Streamlit's "percent" format varies the decimals.
    shares = ["gold_accuracy", "reliability", "agreement"]
    workers = snapshot.workers.assign(**{c: snapshot.workers[c] * 100 for c in shares})
    st.dataframe(
        workers,
        hide_index=True,
        column_config={
            "worker_id": st.column_config.TextColumn("Worker"),
            "answers": st.column_config.NumberColumn("Answers", format="localized"),
            "gold_answers": st.column_config.NumberColumn("Gold answers", format="localized"),
            "gold_accuracy": st.column_config.NumberColumn("Gold accuracy", format="%.1f%%"),
            "reliability": st.column_config.ProgressColumn(
                "Reliability", format="%.1f%%", min_value=0.0, max_value=100.0
            ),
            "agreement": st.column_config.NumberColumn("Agreement", format="%.1f%%"),
            "spam_score": st.column_config.NumberColumn(
                "Spam score", format="%.2f", help="0: answers carry full information; 1: none (chance level)"
            ),
            "spammer": st.column_config.CheckboxColumn("Spammer"),
        },
    )


def render_jobs(snapshot: Snapshot) -> None:
    st.subheader("Jobs")
    jobs: pd.DataFrame = snapshot.scoped_jobs()
    if jobs.empty:
        failed = any(p.service == "Ingest" for p in snapshot.problems)
        st.caption("Jobs unavailable." if failed else "No jobs.")
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
