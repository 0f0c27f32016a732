"""Helpers shared by the tests (and the benchmark scripts); no tests here, pytest collects none.

- ``engine``: a tiny real window encoder, an index store written with the store's own writers, the
  af1_tiny model (engine, predictor, evaluate and classify tests).
- ``signals``: synthetic audio files and the parity closeness check of the encoder tests.
- ``msclap_oracle`` / ``laion_oracle``: the original MS-CLAP and LAION-CLAP packages as test-only
  oracles, and AF1's clapcap preprocessing re-implemented from its specification.

Tests import them as ``from support.engine import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""
