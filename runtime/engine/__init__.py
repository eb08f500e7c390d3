"""The turn loop and what it plans with: the planner, the fold, the model context, live
deltas, the supervisor, the executor seam and pricing."""
