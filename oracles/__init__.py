"""The original CLAP packages as parity oracles, for the tests and the benchmark scripts only.

- ``msclap``: the original MS-CLAP package (and AF1's clapcap preprocessing re-implemented from its
  specification), random weights for its classes, tiny text towers.
- ``laion``: the original LAION-CLAP package, its hub stand-ins, seeded random weights.

They patch ``sys.modules`` (stand-ins for torchvision / torchaudio) to import the originals on our
stack, which the library never does: ``rag_flamingo`` never imports this folder (it is not part of the
installed package). Tests and scripts import ``oracles.<name>`` with the repository root on
``sys.path`` (pytest's ``pythonpath`` setting; the scripts insert it).
"""
