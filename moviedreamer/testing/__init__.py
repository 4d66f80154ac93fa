"""Tiny stand-ins in the real formats (random-weight models, folders laid out as the real checkpoints), shared by
tests/ and bench/. The top floor: it may build anything below it. Test-only doubles live in tests/*_standins.py."""
