"""Invoices as files: CSV and a one-page PDF, built in memory without I/O.

The PDF is written by hand (PDF 1.4, the standard Courier font, no images), so
no rendering library is needed; long invoices continue on further pages.
"""

from __future__ import annotations

import csv
import io

from .domain import Invoice

_PAGE_WIDTH, _PAGE_HEIGHT = 595, 842  # A4 in points
_LINES_PER_PAGE = 48


def money(cents: int, currency: str) -> str:
    """``-1234, "EUR"`` -> ``"-12.34 EUR"``: exact, from integer minor units."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d} {currency}"


def invoice_csv(invoice: Invoice) -> str:
    """One row per line item, then a total row. Amounts in minor units, as stored."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job_id", "client_id", "currency", "description", "quantity", "unit_price_cents", "amount_cents"])
    for line in invoice.lines:
        writer.writerow(
            [
                invoice.job_id,
                invoice.client_id,
                invoice.currency,
                line.description,
                line.quantity,
                line.unit_price_cents,
                line.amount_cents,
            ]
        )
    writer.writerow([invoice.job_id, invoice.client_id, invoice.currency, "Total", "", "", invoice.total_cents])
    return out.getvalue()


def invoice_text_lines(invoice: Invoice) -> list[str]:
    """The invoice as fixed-width text lines (the PDF's and the terminal's content)."""
    lines = [
        f"Invoice for job {invoice.job_id}",
        f"Client {invoice.client_id}, issued {invoice.issued_at:%Y-%m-%d %H:%M} UTC",
        f"Objects labeled {invoice.objects_labeled} (pilot {invoice.pilot_objects})",
        "",
    ]
    for item in invoice.lines:
        lines.append(
            f"{item.description[:60]:<60} {item.quantity:>9} x {money(item.unit_price_cents, invoice.currency):>14}"
            f" = {money(item.amount_cents, invoice.currency):>16}"
        )
    lines += ["", f"{'Total':<89} {money(invoice.total_cents, invoice.currency):>16}"]
    return lines


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
