"""`RagFlamingo`: store + retriever + prompt builder + Audio Flamingo, as one Python API.

    audio ─ load (per encoder rate) ─┬─ retrieval encoder ─ Retriever ─ shots (store rows)
                                     │                                    │ cached clapcap windows
                                     └─ window encoder (query only) ──────┴─ pack (B, L, D) + mask
    build_prompt(task, query, shots, options) ─ tokenize ─ AudioFlamingo.generate ─ answer text

Shot audio is never decoded or re-encoded: its window features come from the store's feature
cache (``build_index ... features=clapcap`` writes ``features/clapcap/``), so a query costs one
retrieval embedding, one window-feature pass over its own audio, and the decoding.

Optional CLAP filtering (the reference gradio demo's trick, reference §6): sample N outputs and
keep the one whose CLAP text embedding is nearest the query audio's CLAP embedding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .audio import check_usable, load_audio, resample
from .errors import ConfigError, StoreError
from .model import postprocess_output, silence_features, tokenize_prompts
from .model.media import pack_window_features
from .prompts import build_prompt, token_counter
from .retrieval import Retriever, Shot
from .store import comparable_fingerprint, normalize_rows

logger = logging.getLogger(__name__)

AudioSource = str | Path | np.ndarray | tuple[np.ndarray, int]


@dataclass
class GenerationConfig:
    """Decoding settings (reference §6: eval uses 3 beams, the demos sample with top-k/top-p)."""

    max_new_tokens: int = 128
    num_beams: int = 1
    do_sample: bool = False
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 1.0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_samples: int = 1  # > 1 with do_sample: CLAP-filter reranking (needs a reranker)
    use_cache: bool = True
    reference_cache_quirk: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.num_samples > 1 and not self.do_sample:
            raise ConfigError("generation.num_samples > 1 needs generation.do_sample=true "
                              "(the CLAP filter reranks sampled outputs)")


@dataclass
class Answer:
    """One generated answer with everything needed to audit it."""

    output: str
    prompt: str
    shots: list[Shot]
    dropped: int = 0  # retrieved shots the prompt budget could not hold
    score: float | None = None  # CLAP-filter similarity of the kept sample, when reranked
    samples: list[tuple[str, float]] = field(default_factory=list)  # (text, CLAP score), reranked


class ClapReranker:
    """Keep the sampled output whose CLAP text embedding best matches the query audio."""

    def __init__(self, encoder):
        if not hasattr(encoder, "embed_text"):
            raise ConfigError(f"CLAP filtering needs a CLAP encoder with embed_text(); "
                              f"{getattr(encoder, 'name', encoder)!r} has none")
        self.encoder = encoder
        self.sample_rate = int(encoder.sample_rate)

    def scores(self, audio_embedding: np.ndarray, texts: list[str]) -> np.ndarray:
        text_emb = normalize_rows(self.encoder.embed_text(texts))
        return text_emb @ normalize_rows(np.asarray(audio_embedding)[None])[0]

    def pick(self, wave: np.ndarray, texts: list[str]) -> tuple[int, np.ndarray]:
        emb = np.asarray(self.encoder.embed([wave]), np.float32)[0]
        scores = self.scores(emb, texts)
        return int(np.argmax(scores)), scores


def crop_seconds(encoder) -> float | None:
    """Seconds of audio an encoder uses from the segment start (None: all), as build_index reads them."""
    return getattr(encoder, "max_seconds", None) or getattr(getattr(encoder, "scheme", None), "max_seconds", None)


def load_waveform(source: AudioSource, sample_rate: int, *, start: float | None = None,
                  end: float | None = None, max_seconds: float | None = None) -> np.ndarray:
    """A query's audio at ``sample_rate``: a file path, a waveform at that rate, or ``(wave, sr)``.

    Raises AudioError (naming the file) for missing, unreadable, too-short or silent audio.
    """
    if isinstance(source, (str, Path)):
        wave = load_audio(source, sample_rate, start=start, end=end, max_seconds=max_seconds)
        name = source
    else:
        wave, sr = source if isinstance(source, tuple) else (source, sample_rate)
        wave = np.asarray(wave, np.float32)
        if wave.ndim != 1:
            raise ConfigError(f"a query waveform must be mono 1-D, got shape {wave.shape}")
        if int(sr) != sample_rate:
            wave = resample(wave, int(sr), sample_rate)
        if max_seconds:
            wave = wave[: int(round(max_seconds * sample_rate))]
        name = "<waveform>"
    check_usable(wave, sample_rate, name)
    return wave


def load_for_encoders(source: AudioSource, encoders: Sequence, item: dict | None = None) -> dict[int, np.ndarray]:
    """``source`` decoded once per sample rate of ``encoders`` (None entries ignored), reading only the
    seconds they use (the longest crop among the encoders at a rate); ``item`` may give start/end."""
    item = item or {}
    rates: dict[int, float | None] = {}  # sample rate -> seconds to read (None: all)
    for enc in encoders:
        if enc is None:
            continue
        sr, most = int(enc.sample_rate), crop_seconds(enc)
        seen = rates.get(sr, 0.0)  # 0: no encoder at this rate yet
        rates[sr] = None if seen is None or not most else max(most, seen)
    return {sr: load_waveform(source, sr, start=item.get("start"), end=item.get("end"), max_seconds=most)
            for sr, most in rates.items()}


class RagFlamingo:
    """Retrieval-augmented few-shot Audio Flamingo.

    ``store``: an `IndexStore` with cached window features (``feature_name``); ``model`` /
    ``tokenizer``: `AudioFlamingo` and its AF1 tokenizer; ``window_encoder``: the model's audio
    front end (``window_features(waves) -> (N, W, D), (N, W)``, e.g. clapcap), used for query
    audio only; ``retrieval_encoder``: the encoder the store was built with (checked against it).
    """

    def __init__(self, store, model, tokenizer, window_encoder, retrieval_encoder=None, *,
                 retriever: Retriever | None = None, generation: GenerationConfig | None = None,
                 feature_name: str = "clapcap", audio_slots: int | None = None,
                 template: str = "eval", max_tokens: int | None = None,
                 reranker: ClapReranker | None = None):
        self.store, self.model, self.tokenizer = store, model, tokenizer
        self.window_encoder, self.retrieval_encoder = window_encoder, retrieval_encoder
        self.retriever = retriever or Retriever(store, retrieval_encoder)
        self.generation = generation or GenerationConfig()
        self.template, self.reranker = template, reranker
        cfg = model.config
        self.windows = cfg.windows_per_audio
        self.audio_slots = int(audio_slots or cfg.max_audios)  # the reference pads to max_num_fewshot
        if self.audio_slots * self.windows > cfg.max_num_media:
            raise ConfigError(f"audio_slots={self.audio_slots} x {self.windows} windows exceeds the model's "
                              f"{cfg.max_num_media} media positions; use at most {cfg.max_audios} slots")
        # prompt + new tokens must fit OPT's learned positions
        self.max_tokens = max_tokens or int(cfg.opt["max_position_embeddings"]) - self.generation.max_new_tokens
        self.shot_features = store.features(feature_name)
        self._check_features(store, feature_name)
        self.pad_window = silence_features(window_encoder).float()
        if self.generation.num_samples > 1 and reranker is None:
            raise ConfigError("generation.num_samples > 1 needs a CLAP reranker (clap_filter.encoder)")

    @property
    def max_shots(self) -> int:
        """Most in-context examples a prompt can hold (audio slots minus the query)."""
        return self.audio_slots - 1

    def _check_features(self, store, name: str) -> None:
        meta = store.info.features.get(name, {})
        built, fingerprint = meta.get("fingerprint"), getattr(self.window_encoder, "fingerprint", None)
        ours = fingerprint() if built and fingerprint is not None else None
        if ours is not None and comparable_fingerprint(built) != comparable_fingerprint(ours):
            raise StoreError(f"{store.root}: the cached '{name}' shot features were made by another window encoder "
                             f"({built.get('name')}, {built.get('checkpoint_sha256', '')[:12]}) than the query's "
                             f"({ours.get('name')}); use the same checkpoint, or rebuild the features with "
                             f"`build_index ... mode=features features={name}`")
        windows, dim = meta.get("windows"), meta.get("dim")
        if windows is not None and int(windows) != self.windows or dim is not None and int(dim) != self.model.config.audio_embed_dim:
            raise StoreError(f"{store.root}: cached '{name}' features are {windows} windows x {dim} dims but the "
                             f"model takes {self.windows} x {self.model.config.audio_embed_dim}; rebuild them "
                             f"with the model's window encoder (`build_index ... features={name}`)")

    # ------------------------------------------------------------------ audio
    def load(self, source: AudioSource, item: dict | None = None) -> dict[int, np.ndarray]:
        """The query decoded once per rate the pipeline needs: ``{sample_rate: wave}``."""
        encoders = [self.window_encoder, self.retrieval_encoder, self.reranker.encoder if self.reranker else None]
        return load_for_encoders(source, encoders, item)

    def embed(self, waves: Sequence[dict[int, np.ndarray]]) -> np.ndarray:
        """Retrieval embeddings [Q, dim] of loaded queries (the store's encoder)."""
        if self.retrieval_encoder is None:
            raise ConfigError("RagFlamingo needs retrieval_encoder= (the store's encoder) to embed queries")
        sr = int(self.retrieval_encoder.sample_rate)
        return np.asarray(self.retrieval_encoder.embed([w[sr] for w in waves]), np.float32)

    # ------------------------------------------------------------------ the model step
    def prompts(self, task: str, items: Sequence[dict], shots: Sequence[Sequence[Shot]],
                options: Sequence[str] | None = None,
                query_options: Sequence[Sequence[str] | None] | None = None) -> list:
        """One `Prompt` per query (shots beyond the token/window budget are dropped by the builder).
        ``options``: one option list for every query; ``query_options``: one per query."""
        per_query = list(query_options) if query_options is not None else [options] * len(items)
        count = token_counter(self.tokenizer)
        # every audio takes a full slot of W windows in the packed media (the reference's padding)
        return [build_prompt(task, item, list(s), opts, template=self.template,
                             default_windows=self.windows, max_windows=self.audio_slots * self.windows,
                             max_tokens=self.max_tokens, count_tokens=count, mode=self.retriever.mode)
                for item, s, opts in zip(items, shots, per_query)]

    def media(self, prompts: Sequence, query_waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, slots*W, D) features + (B, slots*W) mask: cached shot windows, then the query's."""
        rows = sorted({s.row for p in prompts for s in p.shots})
        where = {row: i for i, row in enumerate(rows)}
        q_feats, q_masks = self.window_encoder.window_features(list(query_waves))
        q_feats, q_masks = torch.as_tensor(q_feats).float(), torch.as_tensor(q_masks).float()
        if rows:
            s_feats, s_masks = self.shot_features.get(rows)
            feats = torch.cat([torch.from_numpy(np.asarray(s_feats, np.float32)), q_feats])
            masks = torch.cat([torch.from_numpy(np.asarray(s_masks, np.float32)), q_masks])
        else:
            feats, masks = q_feats, q_masks
        per_prompt = [[where[s.row] for s in p.shots] + [len(rows) + b] for b, p in enumerate(prompts)]
        return pack_window_features(per_prompt, feats, masks, self.pad_window, self.audio_slots)

    @torch.inference_mode()
    def generate(self, task: str, items: Sequence[dict], shots: Sequence[Sequence[Shot]],
                 waves: Sequence[dict[int, np.ndarray]], options: Sequence[str] | None = None,
                 query_options: Sequence[Sequence[str] | None] | None = None) -> list[Answer]:
        """Answers for a batch of queries whose shots are already retrieved."""
        prompts = self.prompts(task, items, shots, options, query_options)
        sr = int(self.window_encoder.sample_rate)
        feats, mask = self.media(prompts, [w[sr] for w in waves])
        ids, attn = tokenize_prompts(self.tokenizer, [p.text for p in prompts])
        g = self.generation
        n = g.num_samples if g.do_sample else 1
        gen = torch.Generator().manual_seed(g.seed)
        out = self.model.generate(
            ids, attn, feats, mask, max_new_tokens=g.max_new_tokens, num_beams=g.num_beams,
            do_sample=g.do_sample, top_k=g.top_k, top_p=g.top_p, temperature=g.temperature,
            length_penalty=g.length_penalty, early_stopping=g.early_stopping, num_return_sequences=n, use_cache=g.use_cache, reference_cache_quirk=g.reference_cache_quirk,
            generator=gen)
        texts = [postprocess_output(t).strip()
                 for t in self.tokenizer.batch_decode(out.new_tokens, skip_special_tokens=False)]
        answers = []
        for b, p in enumerate(prompts):
            cands = texts[b * n:(b + 1) * n]
            ans = Answer(cands[0], p.text, list(p.shots), dropped=len(p.dropped))
            if n > 1:
                rate = self.reranker.sample_rate
                best, scores = self.reranker.pick(waves[b][rate], cands)
                ans.output, ans.score = cands[best], float(scores[best])
                ans.samples = [(c, float(s)) for c, s in zip(cands, scores)]
            answers.append(ans)
        return answers

    # ------------------------------------------------------------------ end to end
    def answer_batch(self, audios: Sequence[AudioSource], task: str, k: int = 4,
                     items: Sequence[dict] | None = None, options: Sequence[str] | None = None,
                     filters: dict | None = None) -> list[Answer]:
        """Retrieve ``k`` shots per query, build the prompts, generate. ``items[i]`` carries the
        query's fields the task needs (``question`` for AQA, ``id``, ``group``, ``start``/``end``)."""
        if k > self.max_shots:
            raise ConfigError(f"k={k} shots do not fit: the model has {self.audio_slots} audio slots "
                              f"(k <= {self.max_shots}, the query takes one)")
        items = [dict(it) for it in items] if items is not None else [{} for _ in audios]
        for i, it in enumerate(items):
            it.setdefault("id", f"query-{i}")
        waves = [self.load(src, it) for src, it in zip(audios, items)]
        shots = self.retriever.search(self.embed(waves), k, exclude_groups=[it.get("group") for it in items],
                                      query_ids=[it["id"] for it in items], filters=filters)
        return self.generate(task, items, shots, waves, options)

    def answer(self, audio: AudioSource, task: str, k: int = 4, question: str | None = None,
               options: Sequence[str] | None = None, **kwargs: Any) -> Answer:
        """One query: ``answer("dog.wav", "classification", k=4, options=store.label_set())``."""
        item = {"question": question} if question else {}
        return self.answer_batch([audio], task, k, [item], options, **kwargs)[0]
