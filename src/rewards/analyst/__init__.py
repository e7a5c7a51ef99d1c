"""Analyst tools: simulation, backtest, analytics."""
