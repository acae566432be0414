from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_persistence_modules_do_not_import_fastapi() -> None:
    # The worker imports these; they must stay free of the web framework.
    code = (
        "import sys\n"
        "import service.settings, service.db.models, service.db.session, service.db.migrate, service.storage\n"
        "import service.schemas.spec, service.queue, service.broker, service.logic.models, service.stored_corpora\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
