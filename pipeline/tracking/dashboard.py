"""`python -m pipeline.ui --optuna`: optuna-dashboard on the sweep's study storage.

A second real client of the storage the sweep writes: the default journal file under `mlruns/`
(or any journal path) or an RDB URL such as `postgresql://…`. The server is bound before the
link is printed, so the link works at once. optuna-dashboard is the optional extra `dashboard`
(`pip install -e '.[dashboard]'`); without it the command says how to install it.
"""

from __future__ import annotations

import sys
import webbrowser
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from pipeline.settings import redact

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

DEFAULT_PORT = 8080
INSTALL = "pip install -e '.[dashboard]'"


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connections never keep Ctrl-C waiting


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log: the printed link stays readable (as with `mlflow server`)."""


def open_storage(storage: str) -> BaseStorage:
    """The sweep's storage as the sweep opens it: an RDB URL, else a journal file that must
    exist (FileNotFoundError otherwise: nothing is created by looking)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    if not Path(storage).is_file():
        raise FileNotFoundError(storage)
    backend = JournalFileBackend(storage, lock_obj=JournalFileOpenLock(storage))
    return optuna.storages.JournalStorage(backend)


def dashboard_url(host: str, port: int) -> str:
    """The dashboard's study list (a wildcard bind address is shown as the loopback one)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/dashboard/"


def serve(storage: str, host: str, port: int, open_browser: bool = False) -> int:
    """Serve optuna-dashboard on `storage` until Ctrl-C; returns the exit code."""
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        print(f"error: optuna-dashboard is not installed: {INSTALL}", file=sys.stderr)
        return 2
    try:
        app = wsgi(open_storage(storage))
    except FileNotFoundError:
        print(
            f"error: no study storage at {storage} (run `python -m pipeline.sweep` first, "
            "or pass --storage)",
            file=sys.stderr,
        )
        return 2
    except Exception as error:  # an unreachable or unusable database: one line, no traceback
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"error: --storage {redact(storage)}: cannot open ({redact(first)})", file=sys.stderr)
        return 2
    server = make_server(host, port, app, _ThreadedServer, _QuietHandler)
    url = dashboard_url(host, port)
    print(f"optuna-dashboard on {redact(storage)}: {url}", flush=True)
    print("(Ctrl-C stops the server)", flush=True)
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 0
    finally:
        server.server_close()
    return 0
