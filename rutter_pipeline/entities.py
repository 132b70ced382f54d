"""The entity table: one row per Rutter commerce entity drives fetching, validation and loading.

Everything that differs between orders, products, customers and transactions lives here as data
(endpoint, envelope keys, keys, typed columns, child tables), so the client, the validator, the
loader and the Dagster factory each have one generic code path. A new entity is a new row.

Typed columns are the fields Rutter marks required (plus a few optional ones an underwriting model
reads); every other field of a record lands in the ``extra`` JSONB column, so the typed columns,
``extra`` and the child tables together give back the record as received (docs/architecture.md §4.4).
Field facts come from Rutter's 2023-03-14 spec (docs/reference/rutter-api-facts.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PgType = Literal["text", "numeric", "timestamptz", "boolean"]

ORDER_STATUS = ("active", "archived", "cancelled", "unknown")
PAYMENT_STATUS = ("pending", "paid", "refunded", "failed", "unknown")
FULFILLMENT_STATUS = ("fulfilled", "unfulfilled", "partial", "unknown")
PAYMENT_METHOD_TYPE = ("cash", "card", "other")
TRANSACTION_STATUS = ("success", "failure", "pending", "cancelled", "refunded", "other")
TRANSACTION_TYPE = ("sale", "refund", "void", "payout", "fee", "other")


def _fields(names: str) -> frozenset[str]:
    """A field set written as one space-separated string, so the table stays readable."""
    return frozenset(names.split())


@dataclass(frozen=True)
class Column:
    """A typed warehouse column read from one field of a Rutter record.

    ``source`` is the path of the field in the record when it differs from ``name`` (for example
    ``("customer", "id")`` for ``orders.customer_id``); the first element of the path is the
    top-level key that the column consumes, so that key is not repeated in ``extra``.
    ``required`` means Rutter always sends the key; ``nullable`` that its value may be null.
    ``enum`` is set only where Rutter fixes the set of values; open strings stay ``None``.
    ``description`` says what the column holds, for the data catalog (Dagster's column schema);
    worded after Rutter's 2023-03-14 field descriptions.
    """

    name: str
    pg_type: PgType
    nullable: bool = False
    required: bool = True
    enum: tuple[str, ...] | None = None
    source: tuple[str, ...] | None = None
    description: str = ""

    @property
    def path(self) -> tuple[str, ...]:
        return self.source or (self.name,)


@dataclass(frozen=True)
class ChildSpec:
    """An array inside a parent record that gets its own table (order line items, variants).

    Child ids are not unique within a connection (Rutter says so for line items and variants), so a
    child row is keyed by ``(connection_id, <parent_key>, id)``.
    """

    name: str
    table: str
    field: str
    parent_key: str
    columns: tuple[Column, ...]
    # Every field Rutter's 2023-03-14 spec defines for a child object: any other key is drift.
    known_fields: frozenset[str] = frozenset()
    # Rutter always sends the array (it may be empty), and never null.
    required: bool = True


@dataclass(frozen=True)
class EntitySpec:
    """One Rutter list endpoint and the warehouse table it fills."""

    name: str
    endpoint: str
    envelope: str
    single_envelope: str
    columns: tuple[Column, ...]
    children: tuple[ChildSpec, ...] = ()
    # Rutter's list endpoint accepts created_at_min/max (customers does not: §3.2 of the facts).
    created_at_filter: bool = True
    # force_fetch is documented to work on orders and transactions only.
    force_fetch: bool = False
    # Webhook codes that mean "records of this entity changed", e.g. ORDER_CREATED, ORDER_UPDATED
    # (read through entity_for_webhook).
    webhook_prefix: str = ""
    # Rutter allows a null id (customers); the warehouse then keys the row by a surrogate.
    nullable_id: bool = False
    # The field that decides a record's date partition, and the one to fall back on when null.
    partition_field: str = "created_at"
    partition_fallback: str | None = None
    # Enough of the table's fields for downstream tests to tell the entity from the others.
    description: str = ""
    table: str = field(default="")
    # Every top-level field Rutter's 2023-03-14 spec defines for the object: a key outside this set
    # is a field Rutter added since (drift: reported as a warning, kept in ``extra``).
    known_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.table:
            object.__setattr__(self, "table", self.name)

    @property
    def typed_keys(self) -> frozenset[str]:
        """Top-level record keys consumed by typed columns or child tables (not copied to extra)."""
        keys = {c.path[0] for c in self.columns}
        keys.update(child.field for child in self.children)
        return frozenset(keys)


ORDER_LINE_ITEMS = ChildSpec(
    name="line_items",
    table="order_line_items",
    field="line_items",
    parent_key="order_id",
    columns=(
        Column("id", "text", description="Rutter's id of the line item (unique within its order only)."),
        Column(
            "product_id",
            "text",
            nullable=True,
            description="Rutter id of the product sold; null when the product was deleted.",
        ),
        Column(
            "variant_id",
            "text",
            nullable=True,
            required=False,
            description="Rutter id of the product variant sold; null when deleted or not sent.",
        ),
        Column("sku", "text", nullable=True, description="Stock keeping unit of the variant sold."),
        Column("title", "text", nullable=True, description="Title of the variant sold."),
        Column("quantity", "numeric", description="Units of the variant sold on this line."),
        Column("price", "numeric", description="Total price of the line (all its units), in the line's currency."),
        Column("iso_currency_code", "text", nullable=True, description="ISO 4217 currency of the line."),
    ),
    known_fields=_fields(
        "id platform_id product_id variant_id price quantity iso_currency_code sku title unit_cost "
        "created_at updated_at"
    ),
)

PRODUCT_VARIANTS = ChildSpec(
    name="variants",
    table="product_variants",
    field="variants",
    parent_key="product_id",
    columns=(
        Column(
            "id", "text", description="Id of the variant (Rutter's or the platform's; unique within its product only)."
        ),
        Column("sku", "text", nullable=True, description="Stock keeping unit of the variant."),
        Column("title", "text", nullable=True, description="Title of the variant."),
        Column("price", "numeric", description="Price of one unit of the variant."),
        Column("iso_currency_code", "text", nullable=True, description="ISO 4217 currency of the price."),
        Column(
            "requires_shipping",
            "boolean",
            description="Whether the variant is shipped (false for digital goods and services).",
        ),
        Column(
            "unit_cost",
            "numeric",
            nullable=True,
            description="What one unit costs the merchant, when the platform says.",
        ),
        Column("barcode", "text", nullable=True, description="Barcode (UPC, EAN, ISBN) of the variant."),
        Column(
            "created_at",
            "timestamptz",
            nullable=True,
            description="When the variant was created on the platform (UTC).",
        ),
        Column(
            "updated_at",
            "timestamptz",
            nullable=True,
            description="When the variant was last updated on the platform (UTC).",
        ),
    ),
    known_fields=_fields(
        "id platform_id product_id price requires_shipping barcode fulfillment_service inventory_management "
        "iso_currency_code sku title unit_cost variant_url description images short_description option_values "
        "currency_prices weight linked_products inventory created_at updated_at"
    ),
)

ORDERS = EntitySpec(
    name="orders",
    endpoint="/orders",
    envelope="orders",
    single_envelope="order",
    force_fetch=True,
    webhook_prefix="ORDER",
    description="Orders with their line items; money in the order's currency.",
    columns=(
        Column("id", "text", description="Rutter's id of the order, unique within the connection."),
        Column(
            "platform_id",
            "text",
            nullable=True,
            required=False,
            description="The order's id on the commerce platform (e.g. Shopify's).",
        ),
        Column("order_number", "text", nullable=True, required=False, description="The merchant-facing order number."),
        Column(
            "status", "text", enum=ORDER_STATUS, description="Order status: active, archived, cancelled or unknown."
        ),
        Column(
            "payment_status",
            "text",
            enum=PAYMENT_STATUS,
            description="Payment status: pending, paid, refunded, failed or unknown.",
        ),
        Column(
            "fulfillment_status",
            "text",
            nullable=True,
            enum=FULFILLMENT_STATUS,
            description="Fulfillment status: fulfilled, unfulfilled, partial or unknown.",
        ),
        Column(
            "iso_currency_code", "text", nullable=True, description="ISO 4217 currency of every amount of the order."
        ),
        Column("total_price", "numeric", description="Total price of the order, discounts applied, in its currency."),
        Column("total_discount", "numeric", description="Sum of the discounts applied to the total price."),
        Column("total_tax", "numeric", nullable=True, description="Total tax paid on the order."),
        Column("total_shipping", "numeric", nullable=True, description="Sum of the shipping costs."),
        Column(
            "customer_id",
            "text",
            nullable=True,
            source=("customer", "id"),
            description="Rutter id of the customer who placed the order (rutter.customers.id).",
        ),
        Column("created_at", "timestamptz", description="When the order was placed (UTC); decides its partition day."),
        Column(
            "updated_at",
            "timestamptz",
            description="When the order last changed at the platform (UTC); the newer version wins.",
        ),
    ),
    known_fields=_fields(
        "id platform_id cancelled_at payment_status status total_discount total_price fulfillment_status "
        "iso_currency_code name order_number source_name total_line_items_price total_shipping total_shipping_discount "
        "total_tax tags billing_address refunds shipping_address customer fulfillments line_items transactions "
        "created_at updated_at"
    ),
    children=(ORDER_LINE_ITEMS,),
)

PRODUCTS = EntitySpec(
    name="products",
    endpoint="/products",
    envelope="products",
    single_envelope="product",
    webhook_prefix="PRODUCT",
    description="Catalogue products with their variants.",
    columns=(
        Column("id", "text", description="Rutter's id of the product, unique within the connection."),
        Column(
            "platform_id",
            "text",
            nullable=True,
            required=False,
            description="The product's id on the commerce platform.",
        ),
        Column("name", "text", description="Name of the product."),
        Column("type", "text", description="The platform's own type or category of the product (not standardized)."),
        Column(
            "status", "text", description="Product status (active, archived, draft, or the platform's own word)."
        ),  # open string: Rutter documents "any string" besides its enum
        Column(
            "created_at", "timestamptz", description="When the product was created (UTC); decides its partition day."
        ),
        Column("updated_at", "timestamptz", description="When the product last changed (UTC); the newer version wins."),
    ),
    known_fields=_fields(
        "id platform_id description name type product_url images status tags variants created_at updated_at"
    ),
    children=(PRODUCT_VARIANTS,),
)

CUSTOMERS = EntitySpec(
    name="customers",
    endpoint="/customers",
    envelope="customers",
    single_envelope="customer",
    created_at_filter=False,
    webhook_prefix="CUSTOMER",
    nullable_id=True,
    partition_fallback="updated_at",
    description="Commerce customers; Rutter allows a null id.",
    columns=(
        Column(
            "id",
            "text",
            nullable=True,
            description="Rutter's id of the customer; null for some platforms (Amazon), then _key stands in.",
        ),
        Column(
            "platform_id",
            "text",
            nullable=True,
            required=False,
            description="The customer's id on the commerce platform.",
        ),
        Column("email", "text", nullable=True, description="Email address of the customer (personal data)."),
        Column("first_name", "text", nullable=True, description="First name of the customer (personal data)."),
        Column("last_name", "text", nullable=True, description="Last name of the customer (personal data)."),
        Column("phone", "text", nullable=True, description="Phone number of the customer (personal data)."),
        Column(
            "created_at",
            "timestamptz",
            nullable=True,
            description="When the customer was created (UTC); decides the partition day (else updated_at).",
        ),
        Column(
            "updated_at",
            "timestamptz",
            nullable=True,
            description="When the customer last changed (UTC); the newer version wins.",
        ),
    ),
    known_fields=_fields("id platform_id email first_name last_name phone orders created_at updated_at platform_data"),
)

TRANSACTIONS = EntitySpec(
    name="transactions",
    endpoint="/transactions",
    envelope="transactions",
    single_envelope="transaction",
    force_fetch=True,
    webhook_prefix="TRANSACTION",
    description="Payment transactions (sales, refunds, payouts, fees).",
    columns=(
        Column("id", "text", description="Rutter's id of the transaction, unique within the connection."),
        Column(
            "platform_id",
            "text",
            nullable=True,
            required=False,
            description="The transaction's id on the commerce platform.",
        ),
        Column(
            "order_id",
            "text",
            nullable=True,
            description="Rutter id of the order the transaction belongs to (rutter.orders.id), if any.",
        ),
        Column(
            "payment_method_type", "text", enum=PAYMENT_METHOD_TYPE, description="How it was paid: cash, card or other."
        ),
        Column(
            "status",
            "text",
            enum=TRANSACTION_STATUS,
            description="Outcome: success, failure, pending, cancelled, refunded or other.",
        ),
        Column(
            "type",
            "text",
            enum=TRANSACTION_TYPE,
            description="Kind of money movement: sale, refund, void, payout, fee or other.",
        ),
        Column("amount", "numeric", nullable=True, description="Amount of the transaction, in its currency."),
        Column("fee", "numeric", nullable=True, required=False, description="Fee the payment provider charged for it."),
        Column(
            "gateway",
            "text",
            nullable=True,
            description="Payment gateway that processed it (e.g. shopify_payments, stripe).",
        ),
        Column("iso_currency_code", "text", nullable=True, description="ISO 4217 currency of the amount and fee."),
        Column(
            "created_at", "timestamptz", description="When the transaction happened (UTC); decides its partition day."
        ),
        Column(
            "updated_at", "timestamptz", description="When the transaction last changed (UTC); the newer version wins."
        ),
    ),
    known_fields=_fields(
        "id platform_id order_id platform_customer_id payment_method_type status type amount fee gateway gateway_data "
        "iso_currency_code platform_type description created_at updated_at platform_data"
    ),
)

ENTITIES: dict[str, EntitySpec] = {e.name: e for e in (ORDERS, PRODUCTS, CUSTOMERS, TRANSACTIONS)}


def entity(name: str) -> EntitySpec:
    """Look an entity up by name, with an error that lists the valid names."""
    try:
        return ENTITIES[name]
    except KeyError:
        raise KeyError(f"unknown entity {name!r}; known: {', '.join(ENTITIES)}") from None


_DATA_WEBHOOK_SUFFIXES = ("CREATED", "UPDATED", "DELETED")
_BY_WEBHOOK_PREFIX = {e.webhook_prefix: e for e in ENTITIES.values() if e.webhook_prefix}


def entity_for_webhook(code: str | None) -> EntitySpec | None:
    """The entity a data webhook is about (``ORDER_CREATED`` -> orders), or None for any other code.

    The one reading of Rutter's data-event codes: the lifecycle and the sensors that split the inbox
    into connection events and data events all ask here.
    """
    prefix, _, suffix = (code or "").rpartition("_")
    return _BY_WEBHOOK_PREFIX.get(prefix) if suffix in _DATA_WEBHOOK_SUFFIXES else None
