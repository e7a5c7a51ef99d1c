"""Deciding awards for events: facts (for requests and runs), evaluation on intake, windows, the offers listing; decides,
never writes."""
