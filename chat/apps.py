from django.apps import AppConfig
from django.core import checks
from django.db.backends.signals import connection_created

# SQLite database files already switched to WAL by this process.
_wal_files: set[str] = set()


def _sqlite_wal(sender, connection, **kwargs) -> None:
    """Put a SQLite database in WAL mode (readers and the writer do not block each other).

    The mode is stored in the database file, so one statement per process and file is enough
    (a new database, e.g. a test database, is switched on its first connection)."""
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict["NAME"])
    if name in _wal_files:
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")
    _wal_files.add(name)


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        from config.middleware import check_security_middleware

        checks.register(check_security_middleware, checks.Tags.security, deploy=True)
        connection_created.connect(_sqlite_wal, dispatch_uid="chat.sqlite_wal")
