from __future__ import annotations

import re
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


def test_the_services_log_lines_have_a_time_a_level_and_a_name() -> None:
    # They went through Python's last-resort handler: a bare message, and nothing below WARNING.
    code = (
        "import logging\n"
        "from service.app import create_app\n"
        "create_app()\n"
        "logging.getLogger('service.logic.jobs').info('job x sent')\n"
        "logging.getLogger('service.problems').error('GET /corpora: database unavailable: refused')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO service\.logic\.jobs: job x sent", lines[0]
    )
    assert re.fullmatch(
        r"\S+ \S+ ERROR service\.problems: GET /corpora: database unavailable: refused", lines[1]
    )
