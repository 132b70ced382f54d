"""What differs between the commerce platforms the sandbox imitates.

Rutter normalizes platforms into one schema but leaves their quirks visible: Shopify-only order
fields, WooCommerce's numeric variant and line-item ids that repeat across parents, Amazon's masked
(null) customer ids, open product status strings. The sandbox reproduces those so that the client
and the warehouse are tested against them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlatformTraits:
    name: str
    shopify_fields: bool = False  # name, source_name, tags, total_line_items_price, cancelled_at
    small_int_child_ids: bool = False  # variant / line-item ids like "1", "2": unique only within the parent
    refund_amounts: bool = True  # refunds[].line_items[].amount as a string (Shopify, WooCommerce), else null
    has_refunds: bool = True  # the order carries a refunds array at all
    null_customer_id_rate: float = 0.01
    null_customer_created_rate: float = 0.0
    guest_rate: float = 0.08
    cash_rate: float = 0.0  # cash on delivery share of payments
    product_statuses: tuple[str, ...] = ("active", "active", "active", "draft", "archived")
    gateway: str = "stripe"
    currency: str = "USD"
    variants_are_products: bool = False  # no real variants: variant id == product id


PLATFORMS: dict[str, PlatformTraits] = {
    t.name: t
    for t in (
        PlatformTraits("SHOPIFY", shopify_fields=True, gateway="shopify_payments"),
        PlatformTraits(
            "WOO_COMMERCE",
            small_int_child_ids=True,
            cash_rate=0.1,
            currency="EUR",
            product_statuses=("publish", "publish", "publish", "draft", "private"),
            gateway="stripe",
        ),
        PlatformTraits(
            "AMAZON",
            refund_amounts=False,
            has_refunds=False,
            null_customer_id_rate=0.3,
            null_customer_created_rate=0.05,
            guest_rate=0.0,
            gateway="amazon_pay",
            variants_are_products=True,
        ),
        PlatformTraits(
            "BIG_COMMERCE", small_int_child_ids=True, refund_amounts=False, currency="GBP", gateway="paypal"
        ),
        PlatformTraits(
            "SQUARE",
            refund_amounts=False,
            guest_rate=0.3,
            cash_rate=0.2,
            currency="CAD",
            gateway="square",
            variants_are_products=True,
        ),
        PlatformTraits("MAGENTO", refund_amounts=False, currency="EUR", gateway="braintree"),
        PlatformTraits("ETSY", refund_amounts=False, guest_rate=0.0, currency="JPY", gateway="etsy_payments"),
        PlatformTraits("WIX", refund_amounts=False, gateway="wix_payments"),
    )
}

DEMO_PLATFORMS = ("SHOPIFY", "WOO_COMMERCE", "AMAZON", "BIG_COMMERCE", "SQUARE", "ETSY", "MAGENTO", "WIX")


def traits(platform: str) -> PlatformTraits:
    return PLATFORMS.get(platform) or PlatformTraits(platform)
