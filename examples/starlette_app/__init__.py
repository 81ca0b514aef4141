"""A plain Starlette app that enqueues docket tasks."""
