"""A refusal of the purchase or returns path points at the invoice's field. Through HTTP
the schema catches a line's bad amount first (tests/api/test_invoices.py), so the
mapping of every purchase field is checked here."""

from __future__ import annotations

import pytest

from rewards.intake.invoices import invoice_path


@pytest.mark.parametrize(
    ("purchase", "invoice"),
    [
        ("/products/0/net_amount", "/lines/0/unit_price"),
        ("/products/3/quantity", "/lines/3/quantity"),
        ("/products/1/sku", "/lines/1/sku"),
        ("/products/1/vat_amount", "/lines/1/vat_amount"),
        ("/products/1/total_amount", "/lines/1"),  # a line total the invoice never sends
        ("/products", "/lines"),
        ("/performed_on", "/issued_on"),
        ("/reference_number", "/number"),
        ("/external_reference", "/number"),
        ("/contact/cim", "/contact/cim"),
        ("/contact/otp", "/contact/otp"),
        ("/currency", "/currency"),
        ("/performed_by_unit", "/performed_by_unit"),
        ("/total_amount", ""),  # no such field on an invoice: the body
        ("/spend/amount", ""),
        ("", ""),
    ],
)
def test_purchase_paths_become_invoice_paths(purchase: str, invoice: str) -> None:
    assert invoice_path(purchase) == invoice


def test_a_field_the_invoice_lacks_points_at_the_fallback() -> None:
    assert invoice_path("/total_amount", fallback="/credits_invoice") == "/credits_invoice"
    assert invoice_path("", fallback="/credits_invoice") == "/credits_invoice"
