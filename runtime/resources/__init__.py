"""The resource families, one module each: agents and their config, environments and
their keys, sessions, workspaces, self-hosted work, export and import. A new family is one
module here, one route table in `api/routes/`, and its tests."""
