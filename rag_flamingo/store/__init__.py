"""The index store: one directory, written by `build_index`, read by retrieval. This package is its one owner.

Layout::

    <store>/
      store.json          StoreInfo (written last: its presence marks a complete store), with typed
                          sub-records: IndexRecord, DatasetRecord, BuildRecord (its SourceRecords),
                          FeatureRecord per feature set, FileRecord per file
      index.faiss         FAISS index, CPU-readable; row i <-> items row i
      items.parquet       one row per indexed item (manifest fields + ``content``, see ITEM_COLUMNS)
      shards/             embedding shards, the authoritative vectors, in row order:
        000000.npy          float32 [n, dim] (a plain array: object arrays are refused)
        000000.parquet      the n items of the shard (same columns as items.parquet)
        000000.rejected.jsonl  the shard's skipped items with reasons (optional)
        000000.done         written after the files above: the shard is complete (ShardMarker:
                            item count, the size and sha256 of each file above, and the shard's key,
                            a digest of the encoder and the shard's item ids)
      features/<name>/    optional per-item model features aligned with the shards,
        000000.safetensors  e.g. clapcap windows: "features" [n, W, D], "mask" [n, W]
      plans/              what each source (the build, then each append) asked for, written before
        000000.jsonl        its shards and never changed: a header (the source: manifest, audio root,
                            shard range; the encoder; shard size; the counts of its manifest rows)
                            and one line per shard with the manifest rows planned into it
      rejected.jsonl      items skipped while building, with the reason
      build.lock          held (fcntl.flock) by the one build_index writing the store

Integrity: store.json records the size and sha256 of every other file (``StoreInfo.files``).
``IndexStore.open`` checks that each is present with its size (and its checksum with
``verify=True``); a corrupted store.json, a missing, truncated or unreadable file is a StoreError
naming the file, never a traceback. The plans are the store's authority: every other file can be
made again from them (a shard by embedding its planned rows from its source's audio; items, index,
rejected.jsonl and store.json from the shards), and each shard's marker keeps its own plan rows
and source, so a lost plan file is written again from its shards. ``build_index store=<store>
mode=repair`` (or rerunning a command that built the store) does that. A store of another format
version is refused (format 1 predates the ``content`` column: rebuild it).

Identity: ``content`` is a digest of the item's audio bytes (``content_key``); ``recording_key``
names the recording an item is across sources (see there); a store row is one manifest row of one
source: its recording and its id (``row_key``). The store refuses to be queried with an encoder
other than the one it was built with.

Modules, each importing only those above it:

- `layout`: file and folder names, the format version, the repair hint, atomic writes;
- `records`: store.json's records (`StoreInfo` and its parts) and the shard marker, read_info,
  check_format, file_problems;
- `items`: a manifest row as an items-table row, and its identity (content, recording, row keys);
- `shards`: writing, reading, checking and dropping shards; rejected items;
- `plans`: the plan files;
- `features`: the per-item feature cache;
- `lock`: the build lock;
- `index_store`: write_store / write_info (every file recorded) and `IndexStore`, the store opened for
  querying.
"""
