"""One run, top to bottom: check before writing, launch ranks, build, train, compress, record."""
