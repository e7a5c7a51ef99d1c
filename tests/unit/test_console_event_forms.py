"""Console event forms: a form becomes the API's body; refusals land on the fields
they point at, also when empty lines were left out."""

from __future__ import annotations

import pytest

from rewards.console.event_forms import FORMS, FormInput, build_body, problems, to_event
from rewards.errors import DomainError
from rewards.schemas import shared_registry


def test_a_purchase_form_becomes_the_api_body() -> None:
    form = FORMS["purchase"]
    given = FormInput(
        values={
            "performed_on": "2026-03-02T11:00:00+02:00",
            "performed_by_unit": "store-001",
            "reference_number": "R-1",
            "products.1.sku": "BREAD",
            "products.1.quantity": "2",
            "products.1.net_amount": "2.50",
            "payment_medium.brand": "visa",
            "process_immediately": "true",
        },
        rows=3,
    )
    built = build_body(form, given, {"contact": {"contact_id": "c"}})
    assert built.body["products"] == [{"sku": "BREAD", "quantity": 2, "net_amount": 2.5}]
    assert built.body["payment_medium"] == {"brand": "visa"}
    assert built.body["process_immediately"] is True
    assert built.line_rows == [1]


def test_refusals_point_at_the_row_typed_in_and_the_rest_go_to_the_summary() -> None:
    form = FORMS["purchase"]
    given = FormInput(
        values={
            "performed_on": "yesterday",
            "reference_number": "R-1",
            "performed_by_unit": "store-001",
            "products.2.sku": "BREAD",
            "products.2.quantity": "0",
            "products.2.net_amount": "abc",
        },
        rows=3,
    )
    built = build_body(form, given, {"contact": {"contact_id": "not-a-uuid"}})
    with pytest.raises(DomainError) as refused:
        to_event(shared_registry(), "purchase", built)
    laid_out = problems(refused.value, form, built, given.rows)
    assert set(laid_out.fields) == {
        "performed_on",
        "products.2.quantity",
        "products.2.net_amount",
    }
    api_messages = {e.path: e.message for e in refused.value.errors or []}
    assert laid_out.fields["products.2.quantity"] == api_messages["/products/0/quantity"]
    assert [m for m in laid_out.summary if m.startswith("/contact/contact_id")]
    assert laid_out.labels["products.2.quantity"] == "Quantity (line 3)"
