"""CSV exports of the treasurer's reports. Every file opens with comment lines that
say what it is, who made it and when (UTC), and with which filters, so a printed
or forwarded export can always be traced back (the export is audited too)."""

from __future__ import annotations

import csv
import io

from starlette.responses import Response

from union.models import utcnow


def _safe(value: object) -> object:
    """Spreadsheets run cells that start with = + - @ as formulas: quote text that does (not numbers)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_text(*, title: str, who, filters: dict, header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    name = getattr(who, "username", "") or ""
    out.write(f"# {title}\n")
    out.write(f"# Exported by {name} at {utcnow().strftime('%Y-%m-%d %H:%M:%S')} UTC\n")
    out.write("# Filters: " + "; ".join(f"{k}={v}" for k, v in filters.items()) + "\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_safe(cell) for cell in row])
    return out.getvalue()


def csv_response(*, filename: str, title: str, who, filters: dict, header: list[str], rows: list[list]) -> Response:
    return Response(csv_text(title=title, who=who, filters=filters, header=header, rows=rows).encode("utf-8"),
                    media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
