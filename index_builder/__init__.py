"""The offline index builder behind ``build_index``: manifest -> decode -> embed -> shards -> FAISS.

Modules, in the order data flows through them (clip-retrieval's reader -> mapper -> writer):
``plan`` (which items go in which shard, resume bookkeeping), ``reader`` (parallel decoding),
``embedder`` (batched embedding, shard writing), ``faiss_index`` (index choice, training, recall
tuning), ``features`` (cached model features), ``pipeline``
(the build / append / features runs), ``cli`` (the Hydra entry point). torchrun ranks come from
``rag_flamingo.distributed``, shared with the evaluation side.
"""
