"""The fixed parts of the demo shop: products, names, cities, topics.

These identifiers are part of the contract with the example campaigns,
segments and templates (see ``docs/architecture.md``): change them only
together.
"""

from __future__ import annotations

SHOP_URL = "https://fietsenwinkel.example"

TOPICS = ("newsletter", "promotions", "product-tips", "service")

CATEGORIES = ("city-bikes", "e-bikes", "kids-bikes", "accessories", "clothing", "maintenance")

#: How often a customer's favourite category is each one (bikes are bought
#: rarely, accessories and maintenance often).
CATEGORY_WEIGHTS = (0.20, 0.14, 0.08, 0.28, 0.14, 0.16)

FEATURED = ("EB-200", "LOCK-S1", "SERVICE-PLUS")

#: (id, category, Dutch name, English name, price, features).  The store's
#: ``products.name`` holds the Dutch name (the shop is Dutch); the English
#: one is the ``name_en`` attribute, the name an en_GB customer's e-mail shows.
PRODUCTS: tuple[tuple[str, str, str, str, float, tuple[str, ...]], ...] = (
    # city bikes
    ("CB-100", "city-bikes", "Stadsfiets Classic 100", "City bike Classic 100", 549.00, ()),
    ("CB-150", "city-bikes", "Stadsfiets Comfort 150", "City bike Comfort 150", 699.00, ()),
    ("CB-220", "city-bikes", "Omafiets Retro 220", "Dutch Granny Bike Retro 220", 479.00, ()),
    ("CB-300", "city-bikes", "Transportfiets Drager 300", "Carrier bike Drager 300", 829.00, ()),
    ("CB-350", "city-bikes", "Vouwfiets Compact 350", "Folding bike Compact 350", 899.00, ()),
    ("CB-400", "city-bikes", "Hybride Sport 400", "Hybrid Sport 400", 949.00, ()),
    ("CB-450", "city-bikes", "Bakfiets Familie 450", "Cargo bike Family 450", 1899.00, ()),
    ("CB-500", "city-bikes", "Racefiets Snel 500", "Road bike Snel 500", 1299.00, ()),
    # e-bikes
    ("EB-100", "e-bikes", "E-bike Stad 100", "E-bike City 100", 1799.00, ("battery-saver",)),
    ("EB-200", "e-bikes", "E-bike Stad 200", "E-bike City 200", 2499.00, ("app", "gps-tracking", "battery-saver")),
    ("EB-300", "e-bikes", "E-bike Tour 300", "E-bike Touring 300", 2899.00, ("app", "battery-saver")),
    ("EB-400", "e-bikes", "Speed pedelec 400", "Speed pedelec 400", 4299.00, ("app", "gps-tracking", "battery-saver")),
    ("EB-CARGO", "e-bikes", "Elektrische bakfiets", "Electric cargo bike", 3999.00, ("app", "gps-tracking")),
    ("EB-FOLD", "e-bikes", "Elektrische vouwfiets", "Electric folding bike", 2199.00, ("battery-saver",)),
    ("EB-MTB", "e-bikes", "E-mountainbike Trail", "E-mountain bike Trail", 3499.00, ("app",)),
    # kids bikes
    ("KB-12", "kids-bikes", "Kinderfiets 12 inch", "Kids' bike 12 inch", 189.00, ()),
    ("KB-16", "kids-bikes", "Kinderfiets 16 inch", "Kids' bike 16 inch", 229.00, ()),
    ("KB-20", "kids-bikes", "Kinderfiets 20 inch", "Kids' bike 20 inch", 279.00, ()),
    ("KB-24", "kids-bikes", "Jeugdfiets 24 inch", "Youth bike 24 inch", 349.00, ()),
    ("KB-BAL", "kids-bikes", "Loopfiets Hout", "Wooden balance bike", 89.00, ()),
    ("KB-26", "kids-bikes", "Tienerfiets 26 inch", "Teen bike 26 inch", 429.00, ()),
    # accessories
    ("LOCK-S1", "accessories", "SlimSlot S1 smart lock", "SlimSlot S1 smart lock", 129.00, ("auto-unlock", "share-access")),
    ("LOCK-CH", "accessories", "Kettingslot 110 cm", "Chain lock 110 cm", 59.95, ()),
    ("LOCK-RING", "accessories", "Ringslot ART-2", "Frame lock ART-2", 34.95, ()),
    ("LIGHT-SET", "accessories", "Verlichtingsset LED", "LED light set", 39.95, ()),
    ("HELMET-U", "accessories", "Fietshelm Urban", "Urban helmet", 69.95, ()),
    ("HELMET-K", "accessories", "Kinderhelm", "Kids' helmet", 34.95, ()),
    ("BAG-DUO", "accessories", "Dubbele fietstas 40 l", "Double pannier 40 l", 79.95, ()),
    ("SEAT-KID", "accessories", "Kinderzitje achter", "Rear child seat", 119.00, ()),
    ("PUMP-FL", "accessories", "Staande pomp", "Floor pump", 29.95, ()),
    ("COMP-GPS", "accessories", "Fietscomputer GPS", "GPS bike computer", 199.00, ("navigation", "ride-stats")),
    ("TRACK-T1", "accessories", "GPS-tracker T1", "GPS tracker T1", 89.00, ("live-tracking", "geofence")),
    ("BELL", "accessories", "Fietsbel Klassiek", "Classic bell", 9.95, ()),
    ("BASKET", "accessories", "Fietsmand voor", "Front basket", 44.95, ()),
    # clothing
    ("RAIN-JKT", "clothing", "Regenjas Dutch Weather", "Rain jacket Dutch Weather", 89.95, ()),
    ("RAIN-PNT", "clothing", "Regenbroek", "Rain trousers", 49.95, ()),
    ("PONCHO", "clothing", "Fietsponcho", "Cycling poncho", 34.95, ()),
    ("GLOVES-W", "clothing", "Winterhandschoenen", "Winter gloves", 29.95, ()),
    ("JERSEY", "clothing", "Fietsshirt Ademend", "Breathable jersey", 44.95, ()),
    ("VEST-HV", "clothing", "Reflectievest", "High-visibility vest", 19.95, ()),
    ("SHORTS", "clothing", "Fietsbroek kort", "Cycling shorts", 54.95, ()),
    ("SOCKS", "clothing", "Fietssokken (3 paar)", "Cycling socks (3 pairs)", 14.95, ()),
    # maintenance
    ("SERVICE-PLUS", "maintenance", "Onderhoudsbeurt Plus", "Service Plus", 89.00, ()),
    ("SERVICE-BASIC", "maintenance", "Onderhoudsbeurt Basis", "Basic service", 49.00, ()),
    ("SERVICE-EBIKE", "maintenance", "E-bike onderhoud", "E-bike service", 119.00, ()),
    ("TUBE-28", "maintenance", "Binnenband 28 inch", "Inner tube 28 inch", 7.95, ()),
    ("TYRE-CITY", "maintenance", "Buitenband Anti-lek", "Puncture-proof tyre", 34.95, ()),
    ("CHAIN-OIL", "maintenance", "Kettingolie", "Chain oil", 8.95, ()),
    ("BRAKE-PADS", "maintenance", "Remblokjes set", "Brake pad set", 12.95, ()),
    ("BATTERY-500", "maintenance", "Accu 500 Wh", "Battery 500 Wh", 549.00, ()),
    ("REPAIR-KIT", "maintenance", "Bandenplakset", "Puncture repair kit", 6.95, ()),
)

#: Bikes: owning one makes a customer a "bike owner" (service reminders).
BIKE_CATEGORIES = ("city-bikes", "e-bikes", "kids-bikes")

#: Share of owners who ever use a feature.  ``share-access`` is used by few
#: lock owners: they are the audience of the usage-tip message.
FEATURE_ADOPTION = {
    "app": 0.7,
    "gps-tracking": 0.45,
    "battery-saver": 0.55,
    "auto-unlock": 0.85,
    "share-access": 0.3,
    "navigation": 0.65,
    "ride-stats": 0.8,
    "live-tracking": 0.6,
    "geofence": 0.35,
}

NL_FIRST = (
    "Jan", "Pieter", "Kees", "Henk", "Willem", "Daan", "Sem", "Lucas", "Bram", "Thijs", "Ruben", "Jeroen",
    "Maarten", "Bas", "Joost", "Sander", "Niels", "Koen", "Gijs", "Stijn", "Anna", "Sanne", "Emma", "Julia",
    "Lotte", "Fleur", "Eva", "Sophie", "Lieke", "Femke", "Maaike", "Anouk", "Marloes", "Ilse", "Esther",
    "Ingrid", "Wilma", "Johanna", "Noor", "Saar", "Fenna", "Mila", "Tess", "Jesse", "Finn", "Mees", "Yara",
    "Mohamed", "Fatima", "Rik",
)
NL_LAST = (
    "de Vries", "Jansen", "van den Berg", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder",
    "de Groot", "Bos", "Vos", "Peters", "Hendriks", "van Leeuwen", "Dekker", "Brouwer", "de Wit", "Dijkstra",
    "Smits", "de Graaf", "van der Meer", "van der Linden", "Kok", "Jacobs", "de Haan", "Vermeulen",
    "van den Heuvel", "van der Veen", "van den Broek", "de Bruijn", "de Jong", "van Dijk", "Janssen",
    "Willems", "Schouten", "van Beek", "Hoekstra", "Verhoeven", "Koster", "Prins", "Huisman", "Postma",
    "Kuipers", "van Vliet", "Maas", "Boer", "Timmermans", "Groen", "El Amrani",
)
EN_FIRST = (
    "Oliver", "George", "Harry", "Jack", "Charlie", "Thomas", "James", "William", "Henry", "Alfie", "Oscar",
    "Arthur", "Leo", "Noah", "Samuel", "Daniel", "Matthew", "David", "Paul", "Richard", "Olivia", "Amelia",
    "Isla", "Ava", "Emily", "Grace", "Sophia", "Lily", "Freya", "Ella", "Charlotte", "Poppy", "Chloe",
    "Jessica", "Hannah", "Lucy", "Sarah", "Rebecca", "Laura", "Priya", "Aisha", "Zara", "Ruby", "Evie",
    "Imogen", "Fiona", "Margaret", "Susan", "Helen", "Kate",
)
EN_LAST = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson", "Wright",
    "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Jackson", "Clarke",
    "Patel", "Khan", "Lewis", "Harris", "Martin", "Cooper", "King", "Lee", "Baker", "Hill", "Moore", "Ward",
    "Morris", "Turner", "Scott", "Cook", "Edwards", "Hughes", "Allen", "Young", "Mitchell", "Phillips",
    "Campbell", "Bell", "Murphy", "Kelly", "Parker", "Bennett", "Price", "Shah",
)

NL_CITIES = (
    "Amsterdam", "Rotterdam", "Den Haag", "Utrecht", "Eindhoven", "Groningen", "Tilburg", "Almere", "Breda",
    "Nijmegen", "Haarlem", "Arnhem", "Zwolle", "Leiden", "Delft", "Amersfoort", "Maastricht", "Enschede",
)
#: Relative sizes: big cities hold more customers.
NL_CITY_WEIGHTS = (16, 12, 10, 9, 5, 5, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3)
UK_CITIES = ("London", "Manchester", "Bristol", "Cambridge", "Oxford", "Edinburgh", "Leeds", "Brighton")
UK_CITY_WEIGHTS = (30, 10, 8, 7, 6, 6, 5, 5)

#: Mail domains under the reserved ``.example`` top-level domain (RFC 2606):
#: demo addresses look real but can never reach anyone.
NL_DOMAINS = ("gmail.example", "ziggo.example", "kpnmail.example", "hotmail.example", "outlook.example", "xs4all.example")
NL_DOMAIN_WEIGHTS = (35, 18, 14, 14, 12, 7)
UK_DOMAINS = ("gmail.example", "btinternet.example", "outlook.example", "yahoo.example", "sky.example")
UK_DOMAIN_WEIGHTS = (40, 15, 20, 15, 10)


def product_url(product_id: str) -> str:
    return f"{SHOP_URL}/p/{product_id}"


def product_rows() -> list[dict]:
    """The ``products`` table rows."""
    return [
        {"id": pid, "name": nl, "category": cat, "price": price, "url": product_url(pid), "features": list(features),
         "attributes": {"name_en": en} if en != nl else {}}
        for pid, cat, nl, en, price, features in PRODUCTS
    ]
