"""What crosses a boundary: events, content blocks, send params, error objects, usage,
and their encoding. It imports neither `resources` nor `engine`."""
