"""Driving the dashboard app with Streamlit's AppTest: running it, signing in, reading what it shows."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def run_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=15)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def submit_key(at: AppTest, key: str) -> AppTest:
    at.text_input(key="api_key_input").input(key)
    at.button(key="sign_in_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def submit_code(at: AppTest, code: str) -> AppTest:
    at.text_input(key="totp_code_input").input(code)
    at.button(key="totp_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def signed_in_app(key: str) -> AppTest:
    """The app after signing in through the form with a key that needs no code."""
    at = submit_key(run_app(), key)
    assert not at.error, [e.value for e in at.error]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def shown_text(at: AppTest) -> str:
    """Every message, heading and caption on the page and in the sidebar, one per line."""
    kinds = ("title", "header", "subheader", "markdown", "caption", "success", "info", "warning", "error")
    return "\n".join(str(element.value) for kind in kinds for element in at.get(kind))


def is_gate(at: AppTest) -> bool:
    """Only the sign-in gate is on the page: no figure, table or chart."""
    return not at.metric and not at.dataframe and not at.get("vega_lite_chart") and not at.selectbox
