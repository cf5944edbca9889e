"""The bundled trainer (``python -m train --help``). Uses ``csp``; ``csp`` never imports it."""
