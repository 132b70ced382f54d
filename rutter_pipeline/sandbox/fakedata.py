"""Word lists and small generators for realistic-looking merchants, people and goods.

Deliberately international (accents, CJK, Cyrillic) so that encoding bugs anywhere in the pipeline
show up against the sandbox rather than in production.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

FIRST_NAMES = (
    "Emma",
    "Liam",
    "Olivia",
    "Noah",
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
    "Chloé",
    "Mateo",
    "Aiko",
    "Hiroshi",
    "Fatima",
    "Mohammed",
    "Priya",
    "Arjun",
    "Ingrid",
    "Björn",
    "Anaïs",
    "François",
    "Dmitri",
    "Светлана",
    "Wei",
    "李娜",
    "Oluwaseun",
    "Amara",
    "Siobhán",
    "Seán",
    "Renée",
    "Jürgen",
    "Ana",
    "Lucía",
    "Mia",
    "Ethan",
)
LAST_NAMES = (
    "Smith",
    "Johnson",
    "García",
    "Müller",
    "Nguyễn",
    "Kowalski",
    "O'Brien",
    "Rossi",
    "Dubois",
    "Jensen",
    "Tanaka",
    "Yamamoto",
    "Öztürk",
    "Silva",
    "Santos",
    "Ivanov",
    "Петров",
    "王",
    "Chen",
    "Kim",
    "Patel",
    "Okafor",
    "Fernández",
    "Lindqvist",
    "Nakamura",
    "Brown",
    "Wilson",
    "Lefèvre",
    "Schäfer",
    "D'Angelo",
)
CITIES = (
    ("San Francisco", "CA", "USA", "94110"),
    ("New York", "NY", "USA", "10001"),
    ("Austin", "TX", "USA", "73301"),
    ("München", "BY", "DEU", "80331"),
    ("Zürich", "ZH", "CHE", "8001"),
    ("Kraków", "MA", "POL", "30-001"),
    ("São Paulo", "SP", "BRA", "01000-000"),
    ("Montréal", "QC", "CAN", "H2X 1Y4"),
    ("Toronto", "ON", "CAN", "M5H 2N2"),
    ("London", "ENG", "GBR", "EC1A 1BB"),
    ("Dublin", "D", "IRL", "D02 X285"),
    ("Paris", "IDF", "FRA", "75001"),
    ("東京", "13", "JPN", "100-0001"),
    ("大阪", "27", "JPN", "530-0001"),
    ("København", "84", "DNK", "1050"),
    ("Москва", "MOW", "RUS", "101000"),
    ("Sydney", "NSW", "AUS", "2000"),
    ("Málaga", "AN", "ESP", "29001"),
)
ADDRESS2 = ("", "", "Apt 4", "Floor 2", "Suite 100", "2. OG")
STREETS = (
    "Main St",
    "Rue de Rivoli",
    "Hauptstraße",
    "Calle Mayor",
    "Baker Street",
    "Market St",
    "銀座通り",
    "Ulica Floriańska",
    "Avenida Paulista",
    "Strøget",
    "Elm Road",
    "Queen St W",
)
ADJECTIVES = (
    "Organic",
    "Handcrafted",
    "Vintage",
    "Ergonomic",
    "Recycled",
    "Artisanal",
    "Über-soft",
    "Café",
    "Nordic",
    "Deluxe",
    "Compact",
    "Wireless",
    "Piñata",
    "Matcha",
    "Crème",
)
NOUNS = (
    "T-Shirt",
    "Mug",
    "Backpack",
    "Candle",
    "Sneakers",
    "Headphones",
    "Notebook",
    "Tea Set",
    "Scarf",
    "Desk Lamp",
    "Water Bottle",
    "Jacket",
    "Yoga Mat",
    "Sunglasses",
    "Wallet",
    "Teapot",
    "Hoodie",
)
PRODUCT_TYPES = ("Apparel", "Home & Garden", "Electronics", "Accessories", "Food & Drink", "Beauty", "Sports")
TAGS = ("sale", "new", "bestseller", "gift", "eco", "limited", "vip", "wholesale", "été", "セール")
SIZES = ("XS", "S", "M", "L", "XL")
COLORS = ("Black", "White", "Navy", "Rouge", "Grün", "Sand")
CARRIERS = (
    ("UPS", "Ground"),
    ("USPS", "Priority Mail"),
    ("FedEx", "2 Day"),
    ("DHL", "Express"),
    ("Canada Post", "Expedited"),
    ("Royal Mail", "Tracked 48"),
    ("ヤマト運輸", "宅急便"),
)
GATEWAYS = ("shopify_payments", "stripe", "paypal", "square", "amazon_pay", "manual")
STORE_WORDS = (
    "Maison",
    "Nordlicht",
    "Blue Fern",
    "Kaizen",
    "Café Olé",
    "Brightside",
    "Tierra",
    "Hygge Home",
    "Sakura",
    "Oak & Iron",
    "Ziggurat",
    "Polaris",
)


def ri(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in [lo, hi): ``random.randrange`` costs ten times more and this is a hot path."""
    return lo + int(rng.random() * (hi - lo))


def pick(rng: random.Random, seq: Sequence[T]) -> T:
    return seq[int(rng.random() * len(seq))]


def cumulative(weights: Sequence[float]) -> list[float]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return [c / acc for c in out]


def weighted_index(rng: random.Random, cum: list[float]) -> int:
    return min(bisect_right(cum, rng.random()), len(cum) - 1)


def uuid_from(rng: random.Random) -> str:
    """A version-4-shaped UUID drawn from ``rng``, so ids are reproducible from the seed."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def person(rng: random.Random) -> tuple[str, str]:
    return pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES)


def email_for(first: str, last: str, n: int) -> str:
    local = _EMAIL_LOCAL.get((first, last))
    if local is None:
        text = "".join(ch for ch in f"{first}.{last}".lower() if ch.isascii() and (ch.isalnum() or ch == "."))
        local = _EMAIL_LOCAL[(first, last)] = text.strip(".") or "customer"
    return f"{local}{n}@example.com"


_EMAIL_LOCAL: dict[tuple[str, str], str] = {}


def phone(rng: random.Random) -> str:
    return str(12_000_000_000 + int(rng.random() * 7_990_000_000))


def address(rng: random.Random, first: str, last: str, tel: str | None) -> dict:
    city, region, country, postal = pick(rng, CITIES)
    return {
        "address1": f"{ri(rng, 1, 999)} {pick(rng, STREETS)}",
        "address2": pick(rng, ADDRESS2),
        "city": city,
        "country_code": country,
        "first_name": first,
        "last_name": last,
        "postal_code": postal,
        "region": region,
        "phone": tel,
    }


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, mean**0.5)))
    limit = 2.718281828459045 ** (-mean)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
