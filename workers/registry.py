"""Job registration: importing this registers every domain's due-work handlers
(each domain's `tasks.py` uses `union.jobs.due_handler`), its tables (for
migrations and key rotation) and its service clients. The web app, the CLI and
the arq worker import it; nothing else needs to."""

import crisis.models  # noqa: F401
import dues.models  # noqa: F401
import welfare.models  # noqa: F401
import dues.card_models  # noqa: F401
import dues.cash_ops_models  # noqa: F401
import dues.cash_ops_tasks  # noqa: F401
import crisis.tasks  # noqa: F401
import crisis.wiring  # noqa: F401
import crisis.demo  # noqa: F401
import dues.demo  # noqa: F401
import dues.card_tasks  # noqa: F401
import dues.stripe_billing  # noqa: F401
import dues.card_demo  # noqa: F401
import treasury.models  # noqa: F401
import welfare.tasks  # noqa: F401
import welfare.demo  # noqa: F401
