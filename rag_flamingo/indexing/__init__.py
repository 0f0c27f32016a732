"""Building an index store: manifest -> decode -> embed -> shards -> FAISS (``build_index`` runs it).

Modules, in the order data flows through them (clip-retrieval's reader -> mapper -> writer):
``plan`` (which items go in which shard, resume bookkeeping), ``reader`` (parallel decoding),
``embedder`` (batched embedding, shard writing), ``faiss_index`` (index choice, training, recall
tuning), ``ondisk`` (shards read block by block), ``quality`` (label precision of the embeddings),
``features`` (cached model features), ``pipeline`` (the build / append / repair / features runs).
torchrun ranks come from ``rag_flamingo.distributed``, shared with the evaluation side.
"""
