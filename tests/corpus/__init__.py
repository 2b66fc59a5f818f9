"""A generated corpus of bad and awkward inputs (see ``build_corpus``); no committed binaries."""
