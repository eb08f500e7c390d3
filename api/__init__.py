"""HTTP layer: Starlette app, routes, auth, errors, pagination, SSE, CLI."""
