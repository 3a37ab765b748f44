"""Invoices of a job or of a client's period as files: CSV and a PDF, built in memory
without I/O.

The PDF is written by hand (PDF 1.4, the standard Courier font, no images), so
no rendering library is needed; long invoices continue on further pages.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable

from .domain import Invoice, InvoiceLine, PeriodInvoice

_PAGE_WIDTH, _PAGE_HEIGHT = 595, 842  # A4 in points
_LINES_PER_PAGE = 48


def money(cents: int, currency: str) -> str:
    """``-1234, "EUR"`` -> ``"-12.34 EUR"``: exact, from integer minor units."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d} {currency}"


_LINE_COLUMNS = ["description", "quantity", "unit_price_cents", "amount_cents"]


def _line_cells(line: InvoiceLine) -> list[object]:
    return [line.description, line.quantity, line.unit_price_cents, line.amount_cents]


def _csv(columns: list[str], rows: Iterable[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def invoice_csv(invoice: Invoice) -> str:
    """One row per line item, then a total row. Amounts in minor units, as stored."""
    head = [invoice.job_id, invoice.client_id, invoice.currency]
    rows = [[*head, *_line_cells(line)] for line in invoice.lines]
    rows.append([*head, "Total", "", "", invoice.total_cents])
    return _csv(["job_id", "client_id", "currency", *_LINE_COLUMNS], rows)


def period_invoice_csv(invoice: PeriodInvoice) -> str:
    """One row per line item, naming its job, then a total row (empty job_id). Amounts in
    minor units; the period's bounds as ISO 8601 UTC times, the end excluded."""
    head = [invoice.client_id, invoice.currency, invoice.period_start.isoformat(), invoice.period_end.isoformat()]
    rows = [[*head, line.job_id, *_line_cells(line)] for line in invoice.lines]
    rows.append([*head, "", "Total", "", "", invoice.total_cents])
    return _csv(["client_id", "currency", "period_start", "period_end", "job_id", *_LINE_COLUMNS], rows)


def _item_lines(lines: Iterable[InvoiceLine], currency: str) -> list[str]:
    """Fixed-width text of line items: quantity x unit price = amount."""
    return [
        f"{item.description[:60]:<60} {item.quantity:>9} x {money(item.unit_price_cents, currency):>14}"
        f" = {money(item.amount_cents, currency):>16}"
        for item in lines
    ]


def _total_line(total_cents: int, currency: str) -> str:
    return f"{'Total':<89} {money(total_cents, currency):>16}"


def invoice_text_lines(invoice: Invoice) -> list[str]:
    """The invoice as fixed-width text lines (the PDF's and the terminal's content)."""
    return [
        f"Invoice for job {invoice.job_id}",
        f"Client {invoice.client_id}, issued {invoice.issued_at:%Y-%m-%d %H:%M} UTC",
        f"Objects labeled {invoice.objects_labeled} (pilot {invoice.pilot_objects})",
        "",
        *_item_lines(invoice.lines, invoice.currency),
        "",
        _total_line(invoice.total_cents, invoice.currency),
    ]


def period_invoice_text_lines(invoice: PeriodInvoice) -> list[str]:
    """The period invoice as fixed-width text lines: each job's items under its id."""
    lines = [
        f"Invoice for client {invoice.client_id}, {invoice.period_start:%Y-%m-%d %H:%M} to "
        f"{invoice.period_end:%Y-%m-%d %H:%M} UTC (end excluded)",
        f"Issued {invoice.issued_at:%Y-%m-%d %H:%M} UTC, in {invoice.currency}",
    ]
    for job_id, items in itertools.groupby(invoice.lines, key=lambda line: line.job_id):
        lines += ["", f"Job {job_id}" if job_id else "Not tied to a job"]
        lines += _item_lines(items, invoice.currency)
    return [*lines, "", _total_line(invoice.total_cents, invoice.currency)]


def _escape(text: str) -> str:
    ascii_text = text.encode("latin-1", "replace").decode("latin-1")
    return ascii_text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_pdf(lines: list[str]) -> bytes:
    """A PDF with ``lines`` in 8-point Courier, 48 lines a page."""
    pages = [lines[i : i + _LINES_PER_PAGE] for i in range(0, max(len(lines), 1), _LINES_PER_PAGE)] or [[]]
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>")
    for page_id, page in zip(page_ids, pages, strict=True):
        body = ["BT", "/F1 8 Tf", "10 TL", f"40 {_PAGE_HEIGHT - 50} Td"]
        body += [f"({_escape(line)}) Tj T*" for line in page]
        body.append("ET")
        stream = "\n".join(body).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_PAGE_WIDTH} {_PAGE_HEIGHT}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as a PDF document."""
    return text_pdf(invoice_text_lines(invoice))


def period_invoice_pdf(invoice: PeriodInvoice) -> bytes:
    """The period invoice as a PDF document."""
    return text_pdf(period_invoice_text_lines(invoice))
