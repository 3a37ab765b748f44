"""Figures as the dashboard prints them. Pure functions, no Streamlit."""

from __future__ import annotations

import math

MISSING = "—"

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}
# ISO 4217 currencies whose minor unit is the major unit: 500 "cents" of JPY are ¥500.
_ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "UGX", "XAF", "XOF"}


def format_cents(amount: int | None, currency: str = "USD") -> str:
    """``1234`` USD -> ``"$12.34"``; ``-5`` -> ``"-$0.05"``; unknown symbols -> ``"12.34 CHF"``.

    Exact integer arithmetic: money never goes through a float here.
    """
    if amount is None:
        return MISSING
    code = (currency or "USD").upper()
    digits = 0 if code in _ZERO_DECIMAL else 2
    units, minor = divmod(abs(int(amount)), 10**digits)
    number = f"{units:,}" + (f".{minor:0{digits}d}" if digits else "")
    sign = "-" if amount < 0 else ""
    symbol = _SYMBOLS.get(code)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {code}"


def format_percent(share: float | None, digits: int = 1) -> str:
    """``0.9234`` -> ``"92.3%"``."""
    if share is None or math.isnan(share):
        return MISSING
    return f"{share:.{digits}%}"


def format_count(count: int | None) -> str:
    """``12345`` -> ``"12,345"``."""
    return MISSING if count is None else f"{count:,}"


def format_duration(seconds: float | None) -> str:
    """Seconds as the two largest units: ``"8.2 s"``, ``"3m 05s"``, ``"2h 03m"``, ``"1d 04h"``."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"
