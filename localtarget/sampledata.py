"""A small product database for the local target: the shape of a retail ERP, with live writes.

The schema stands for the product's own (system information with the installed version, business
partners, products, orders, order lines), enough for backups, drills, exports and imports to
have real data to prove themselves on. :class:`OrderWriter` keeps committing orders in the
background, as shops do, so the demo and the tests work against a database that is changing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from erpcloud.model import Customer
from erpcloud.product import HEALTH_QUERY, SYSTEM_INFO_TABLE
from erpcloud.render import PRODUCT_DATABASE

__all__ = ["HEALTH_QUERY", "SYSTEM_INFO_TABLE"]  # still read from here by the stand-ins' callers


SCHEMA = f"""
CREATE TABLE {SYSTEM_INFO_TABLE} (
    id integer PRIMARY KEY CHECK (id = 1),
    edition text NOT NULL,
    version text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE c_bpartner (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL
);
CREATE TABLE m_product (
    id bigserial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    name text NOT NULL,
    price numeric(12, 2) NOT NULL
);
CREATE TABLE c_order (
    id bigserial PRIMARY KEY,
    bpartner_id bigint NOT NULL REFERENCES c_bpartner (id),
    ordered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    total numeric(14, 2) NOT NULL
);
CREATE TABLE c_orderline (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES c_order (id),
    product_id bigint NOT NULL REFERENCES m_product (id),
    quantity integer NOT NULL,
    amount numeric(14, 2) NOT NULL
);
"""


def create_database(admin_conninfo: str) -> None:
    """Create the product database (idempotent)."""
    with psycopg.connect(admin_conninfo, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (PRODUCT_DATABASE,)
        ).fetchone()
        if exists is None:
            connection.execute(f'CREATE DATABASE "{PRODUCT_DATABASE}"')


def load_sample_data(
    conninfo: str, customer: Customer, partners: int = 200, products: int = 500
) -> None:
    """The schema and a starting catalogue: partners, products, a first batch of orders."""
    with psycopg.connect(conninfo) as connection:
        connection.execute(SCHEMA)
        connection.execute(
            f"INSERT INTO {SYSTEM_INFO_TABLE} (id, edition, version) VALUES (1, %s, %s)",  # noqa: S608
            (customer.edition.value, customer.product_version),
        )
        connection.execute(
            "INSERT INTO c_bpartner (name, email) SELECT 'Partner ' || g, "
            "'partner' || g || '@example.com' FROM generate_series(1, %s) g",
            (partners,),
        )
        connection.execute(
            "INSERT INTO m_product (sku, name, price) SELECT 'SKU-' || g, 'Product ' || g, "
            "mod(g, 97) + 0.99 FROM generate_series(1, %s) g",
            (products,),
        )
        connection.execute(
            "INSERT INTO c_order (bpartner_id, total) SELECT mod(g, %s) + 1, 0 "
            "FROM generate_series(1, 1000) g",
            (partners,),
        )
        connection.execute(
            "INSERT INTO c_orderline (order_id, product_id, quantity, amount) "
            "SELECT o.id, mod(o.id * 7, %s) + 1, 2, 19.98 FROM c_order o",
            (products,),
        )
        connection.execute(
            "UPDATE c_order o SET total = s.amount FROM (SELECT order_id, sum(amount) AS amount "
            "FROM c_orderline GROUP BY order_id) s WHERE s.order_id = o.id"
        )


@dataclass
class OrderWriter:
    """Commits one order with its lines every ``interval`` seconds, until stopped."""

    conninfo: str
    interval: float = 0.1
    committed: int = 0
    last_commit: datetime | None = None
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> OrderWriter:
        self._thread = threading.Thread(target=self._run, name="order-writer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with psycopg.connect(self.conninfo, autocommit=False) as connection:
                while not self._stop.is_set():
                    self.write_one(connection)
                    self._stop.wait(self.interval)
        except psycopg.Error as exc:
            self.errors.append(str(exc))

    def write_one(self, connection: psycopg.Connection[tuple[object, ...]]) -> None:
        row = connection.execute(
            "INSERT INTO c_order (bpartner_id, total) SELECT id, 0 FROM c_bpartner "
            "ORDER BY random() LIMIT 1 RETURNING id"
        ).fetchone()
        assert row is not None
        connection.execute(
            "INSERT INTO c_orderline (order_id, product_id, quantity, amount) "
            "SELECT %s, id, 1, price FROM m_product ORDER BY random() LIMIT 3",
            (row[0],),
        )
        connection.execute(
            "UPDATE c_order SET total = (SELECT sum(amount) FROM c_orderline WHERE order_id = %s) "
            "WHERE id = %s",
            (row[0], row[0]),
        )
        connection.commit()
        self.committed += 1
        self.last_commit = datetime.now(UTC)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.errors:
            raise RuntimeError(f"the order writer failed: {self.errors[-1]}")

    def wait_for(self, orders: int, timeout: float = 30.0) -> None:
        """Block until at least ``orders`` orders were committed since start."""
        deadline = time.monotonic() + timeout
        while self.committed < orders:
            if self.errors or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the order writer committed {self.committed} of {orders} orders"
                    + (f": {self.errors[-1]}" if self.errors else "")
                )
            time.sleep(0.05)


# --- the same data on a real machine, as psql scripts over SSH -------------------------------
def _literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on in every supported release)."""
    return "'" + value.replace("'", "''") + "'"


def sample_data_script(customer: Customer, partners: int = 200, products: int = 500) -> str:
    """:func:`load_sample_data` as one psql script, run as ``postgres`` on the machine. The
    tables belong to the product's role; the product created its system-information row at
    its first start already, so that insert keeps the existing row."""
    return "\n".join(
        [
            r"\set ON_ERROR_STOP on",
            rf"\set partners {int(partners)}",
            rf"\set products {int(products)}",
            "BEGIN;",
            f"SET ROLE {PRODUCT_DATABASE};",
            SCHEMA.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS "),
            # The values are the model's (an edition, a release pattern), quoted all the same.
            f"INSERT INTO {SYSTEM_INFO_TABLE} (id, edition, version) VALUES "  # noqa: S608
            f"(1, {_literal(customer.edition.value)}, {_literal(customer.product_version)}) "
            "ON CONFLICT (id) DO NOTHING;",
            "INSERT INTO c_bpartner (name, email) SELECT 'Partner ' || g, "
            "'partner' || g || '@example.com' FROM generate_series(1, :partners) g;",
            "INSERT INTO m_product (sku, name, price) SELECT 'SKU-' || g, 'Product ' || g, "
            "mod(g, 97) + 0.99 FROM generate_series(1, :products) g;",
            "INSERT INTO c_order (bpartner_id, total) SELECT mod(g, :partners) + 1, 0 "
            "FROM generate_series(1, 1000) g;",
            "INSERT INTO c_orderline (order_id, product_id, quantity, amount) "
            "SELECT o.id, mod(o.id * 7, :products) + 1, 2, 19.98 FROM c_order o;",
            "UPDATE c_order o SET total = s.amount FROM (SELECT order_id, sum(amount) AS amount "
            "FROM c_orderline GROUP BY order_id) s WHERE s.order_id = o.id;",
            "COMMIT;",
            "",
        ]
    )


#: One order with three lines, its total equal to the sum of its lines (as :class:`OrderWriter`
#: writes it), in one statement: the machine's writer runs it in a loop.
ORDER_STATEMENT = (
    "WITH p AS MATERIALIZED (SELECT id, price FROM m_product ORDER BY random() LIMIT 3), "
    "o AS (INSERT INTO c_order (bpartner_id, total) "
    "SELECT (SELECT id FROM c_bpartner ORDER BY random() LIMIT 1), (SELECT sum(price) FROM p) "
    "RETURNING id) "
    "INSERT INTO c_orderline (order_id, product_id, quantity, amount) "
    "SELECT o.id, p.id, 1, p.price FROM o, p"
)
