"""Plain-function service logic (no FastAPI): each function opens its own unit of work, so a
request either commits everything it changes or nothing."""
