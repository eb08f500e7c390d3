"""Tools the engine runs itself: the agent toolset (bash, read, write, edit, glob, grep)."""
