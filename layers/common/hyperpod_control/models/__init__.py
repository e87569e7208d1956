"""Pydantic models: the shapes that cross every boundary (events, task I/O, store items). No I/O."""
