"""A SQL Server stand-in speaking TDS to the real pymssql driver, backed by PostgreSQL (see README.md)."""

from .server import Database, Faults, TdsEmulator
from .translate import TsqlError

__all__ = ["Database", "Faults", "TdsEmulator", "TsqlError"]
