"""Helpers shared by the tests; no tests here, pytest collects none.

- ``engine``: a tiny real window encoder, an index store written with the store's own writers, the
  af1_tiny model (engine, predictor, evaluate and classify tests).
- ``signals``: synthetic audio files and the parity closeness check of the encoder tests.
- ``openvino_child``: OpenVINO tests run in a child interpreter.
(The original CLAP packages as parity oracles, shared with the benchmark scripts: ``oracles/``.)

Tests import them as ``from support.engine import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""
