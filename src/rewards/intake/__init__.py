"""Events in: recording and bulk (``events``), the per-type rules (``prepare``), a purchase
as stored (``purchases``), contact identification, contacts, estimates, the answers."""
