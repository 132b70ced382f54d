"""The entity table: one row per Rutter commerce entity drives fetching, validation and loading.

Everything that differs between orders, products, customers and transactions lives here as data
(endpoint, envelope keys, keys, typed columns, child tables), so the client, the validator, the
loader and the Dagster factory each have one generic code path. A new entity is a new row.

Typed columns are the fields Rutter marks required (plus a few optional ones an underwriting model
reads); every other field of a record lands in the ``extra`` JSONB column, so the typed columns,
``extra`` and the child tables together give back the record as received (DESIGN §4.4).
Field facts come from Rutter's 2023-03-14 spec (../shared/reference/rutter-api-facts.md §4).
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
    """

    name: str
    pg_type: PgType
    nullable: bool = False
    required: bool = True
    enum: tuple[str, ...] | None = None
    source: tuple[str, ...] | None = None

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
    # Webhook codes that mean "records of this entity changed", e.g. ORDER_CREATED, ORDER_UPDATED.
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
        Column("id", "text"),
        Column("product_id", "text", nullable=True),
        Column("variant_id", "text", nullable=True, required=False),
        Column("sku", "text", nullable=True),
        Column("title", "text", nullable=True),
        Column("quantity", "numeric"),
        Column("price", "numeric"),
        Column("iso_currency_code", "text", nullable=True),
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
        Column("id", "text"),
        Column("sku", "text", nullable=True),
        Column("title", "text", nullable=True),
        Column("price", "numeric"),
        Column("iso_currency_code", "text", nullable=True),
        Column("requires_shipping", "boolean"),
        Column("unit_cost", "numeric", nullable=True),
        Column("barcode", "text", nullable=True),
        Column("created_at", "timestamptz", nullable=True),
        Column("updated_at", "timestamptz", nullable=True),
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
        Column("id", "text"),
        Column("platform_id", "text", nullable=True, required=False),
        Column("order_number", "text", nullable=True, required=False),
        Column("status", "text", enum=ORDER_STATUS),
        Column("payment_status", "text", enum=PAYMENT_STATUS),
        Column("fulfillment_status", "text", nullable=True, enum=FULFILLMENT_STATUS),
        Column("iso_currency_code", "text", nullable=True),
        Column("total_price", "numeric"),
        Column("total_discount", "numeric"),
        Column("total_tax", "numeric", nullable=True),
        Column("total_shipping", "numeric", nullable=True),
        Column("customer_id", "text", nullable=True, source=("customer", "id")),
        Column("created_at", "timestamptz"),
        Column("updated_at", "timestamptz"),
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
        Column("id", "text"),
        Column("platform_id", "text", nullable=True, required=False),
        Column("name", "text"),
        Column("type", "text"),
        Column("status", "text"),  # open string: Rutter documents "any string" besides its enum
        Column("created_at", "timestamptz"),
        Column("updated_at", "timestamptz"),
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
        Column("id", "text", nullable=True),
        Column("platform_id", "text", nullable=True, required=False),
        Column("email", "text", nullable=True),
        Column("first_name", "text", nullable=True),
        Column("last_name", "text", nullable=True),
        Column("phone", "text", nullable=True),
        Column("created_at", "timestamptz", nullable=True),
        Column("updated_at", "timestamptz", nullable=True),
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
        Column("id", "text"),
        Column("platform_id", "text", nullable=True, required=False),
        Column("order_id", "text", nullable=True),
        Column("payment_method_type", "text", enum=PAYMENT_METHOD_TYPE),
        Column("status", "text", enum=TRANSACTION_STATUS),
        Column("type", "text", enum=TRANSACTION_TYPE),
        Column("amount", "numeric", nullable=True),
        Column("fee", "numeric", nullable=True, required=False),
        Column("gateway", "text", nullable=True),
        Column("iso_currency_code", "text", nullable=True),
        Column("created_at", "timestamptz"),
        Column("updated_at", "timestamptz"),
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
