"""Deciding awards for events: facts, evaluation on intake, windows; decides, never writes."""
