"""Plain-Python domain logic: money, wallet arithmetic, awards. Imports neither litestar nor sqlmodel."""
