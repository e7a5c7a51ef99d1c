"""The process: the runtime context (loaded rulesets, schemas, clock), reload and the file watcher, rate limits, metrics."""
