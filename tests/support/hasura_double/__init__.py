"""An HTTP double of the Hasura v2 metadata API, backed by the real PostgreSQL catalog (see server.py)."""

from .server import HasuraDouble, HasuraDoubleServer, QErr

__all__ = ["HasuraDouble", "HasuraDoubleServer", "QErr"]
