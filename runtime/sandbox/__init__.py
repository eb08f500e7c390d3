"""Where a cloud session's tools run on this host: bubblewrap sandboxes, their network, packages."""
