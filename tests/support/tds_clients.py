"""The TDS client drivers the ``tds`` tests run with: pymssql (FreeTDS: SQL batches, client-side parameter
interpolation, ``BEGIN TRAN`` batches) and python-tds ``pytds`` (pure Python: transaction-manager requests and
``sp_executesql`` RPCs with typed parameters). One small adapter per driver, so a test reads the same for both:
``client.connect(params)``, ``client.errnum(exc)``, ``client.errtext(exc)``, ``client.cancel(conn, cur)``,
``client.binary(b)`` (a binary parameter value as the driver takes it), ``client.is_timeout(exc)`` and
``client.is_connection_lost(exc)`` (how the driver reports a query timeout / a connection the server dropped).

``params`` are the pymssql-style keyword arguments of :meth:`MssqlDatabase.params` (``server``, ``port`` as
string, ``user``, ``password``, ``database``, ``tds_version`` "7.3"/"7.4", ``login_timeout``, ``autocommit``,
optional ``timeout``); each adapter maps them to its driver.
"""


class PymssqlClient:
    name = "pymssql"

    @property
    def module(self):
        import pymssql

        return pymssql

    def connect(self, params):
        return self.module.connect(**params)

    @staticmethod
    def errnum(exc):
        """SQL Server error number (cursor errors: (number, text); connect errors: ((number, text),))."""
        a = exc.args[0]
        return a[0] if isinstance(a, tuple) else a

    @staticmethod
    def errtext(exc):
        a = exc.args[0]
        text = a[1] if isinstance(a, tuple) else exc.args[1]
        return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)

    @staticmethod
    def cancel(conn, cur):
        conn._conn.cancel()  # DB-Lib dbcancel: attention, then wait for the server's acknowledgement

    @staticmethod
    def binary(b):
        return bytearray(b)  # pymssql interpolates bytearray as 0x.. (bytes would become a string)

    def is_timeout(self, exc):
        # DB-Lib 20003 (timed out); FreeTDS then gives the DBPROCESS up (20047), as against SQL Server
        return (isinstance(exc, self.module.OperationalError) and self.errnum(exc) in (20003, 20047)
                and "timed out" in self.errtext(exc))

    def is_connection_lost(self, exc):
        return isinstance(exc, self.module.OperationalError)


class PytdsClient:
    name = "pytds"

    @property
    def module(self):
        import pytds

        return pytds

    def connect(self, params):
        pytds = self.module
        from pytds import tds_base

        p = dict(params)
        kw = dict(server=p.pop("server"), port=int(p.pop("port")), user=p.pop("user"), password=p.pop("password"),
                  database=p.pop("database"), autocommit=p.pop("autocommit", False),
                  login_timeout=p.pop("login_timeout", 10), disable_connect_retry=True)
        version = p.pop("tds_version", "7.4")
        kw["tds_version"] = {"7.4": tds_base.TDS74, "7.3": tds_base.TDS73}[version]
        if "timeout" in p:
            kw["timeout"] = p.pop("timeout") or None
        p.pop("use_datetime2", None)  # pytds sends datetime parameters as datetime2 anyway
        if p:
            raise TypeError("PytdsClient.connect: no mapping for %s" % sorted(p))
        return pytds.connect(**kw)

    @staticmethod
    def errnum(exc):
        return getattr(exc, "msg_no", None)

    @staticmethod
    def errtext(exc):
        return getattr(exc, "text", None) or str(exc)

    @staticmethod
    def cancel(conn, cur):
        cur.cancel()  # ATTENTION, then read up to the server's DONE_ATTN

    def binary(self, b):
        # DB-API Binary: python-tds sends plain bytes as varchar (bytes_to_unicode) and refuses bytearray
        return self.module.Binary(bytes(b))

    @staticmethod
    def is_timeout(exc):
        return isinstance(exc, TimeoutError)  # the socket read timed out; python-tds sent ATTENTION first

    def is_connection_lost(self, exc):
        from pytds import tds_base

        return isinstance(exc, (tds_base.ClosedConnectionError, self.module.OperationalError, ConnectionError))


CLIENTS = {"pymssql": PymssqlClient(), "pytds": PytdsClient()}
