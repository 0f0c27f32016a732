"""The ``build_index`` command (``cli``: Hydra composition, then `rag_flamingo.indexing.pipeline`) and
the makers of official datasets' manifests (``manifests``: ``python -m index_builder.manifests``).

A client of ``rag_flamingo``: it imports the library, the library never imports it.
"""
