"""QR codes (SVG) for a till's scanner: a contact's one-time password as a picture."""

from __future__ import annotations

import io

import segno


def qr_svg(text: str, *, title: str) -> str:
    """``text`` as a QR code, an inline SVG element (no XML declaration) with a title for
    screen readers. Medium error correction: a till scanning a phone's screen."""
    out = io.BytesIO()
    segno.make_qr(text, error="m").save(
        out,
        kind="svg",
        xmldecl=False,
        svgns=True,
        title=title,
        scale=6,
        border=2,
        svgclass="qr-code",
        lineclass=None,
    )
    return out.getvalue().decode()
