"""Fresh-process helpers for the tests (a regular package, so no installed
``_multiprocess`` module can shadow it)."""
