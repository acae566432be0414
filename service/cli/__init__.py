"""The ``tagsmith`` command line (console script entry point ``service.cli:main``).

- ``supervisor``: runs the whole stack on one machine (``tagsmith up``): embedded Redis, migrations,
  the API and one worker, each child in its own process group so that a stop leaves nothing behind.
- ``client``: the HTTP client behind ``upload``, ``import-model``, ``train``, ``watch``, ``cancel``,
  ``files``, ``jobs``, ``models``, ``corpora``, ``predict``, ``evaluate`` and ``demo``.
- ``commands``: the typer application that wires both to the command line.
"""

from service.cli.commands import app, main

__all__ = ["app", "main"]
