"""Job registration: importing this registers every domain's due-work handlers
(each domain's `tasks.py` uses `union.jobs.due_handler`). The web app, the CLI
and the arq worker import it; nothing else needs to."""

# Domains add their tasks modules here as they gain due work, e.g.:
#   import crisis.tasks  # noqa: F401
