"""Sub-commands of the ``rewards`` command line, one module each with ``register``."""
