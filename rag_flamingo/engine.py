"""`RagFlamingo`: the model step of retrieval-augmented Audio Flamingo (prompt builder + media + model).

    (the runner: decode ─ retrieval encoder ─ Retriever ─ shots) ─┐
    query waves ─ window encoder (query only) ───────────────────┼─ cached shot windows ─ pack (B, L, D) + mask
    build_prompt(task, query, shots, options) ─ tokenize ─ model.generate ─ answer text
                                                         └ decode=rank: score every option ─ best option + label_scores

The query loop (decode, embed, retrieve with hygiene, predict) is `rag_flamingo.runner`; answering a
clip in one call is `rag_flamingo.api.answer`.

Shot audio is never decoded or re-encoded: its window features come from the store's feature
cache (``build_index ... features=clapcap`` writes ``features/clapcap/``), so a query costs one
retrieval embedding, one window-feature pass over its own audio, and the decoding.

Rank classification (``decode="rank"`` or ``"rank_sum"``; ``flamingo.decode`` in the configs): for
classification, tagging and yes/no AQA, instead of generating and matching the text to an option,
every option of the query is scored by the model's log-likelihood of its answer after the prompt
(`rag_flamingo.model.scoring`: one shared prefill of the prompt, the options as batched rows from
its KV cache). An option's continuation is its answer as the reference writes answers: what
`Prompt.full_text` appends after the prompt (the label mapped as the reference names it, stripped,
lowercased) up to and including ``<|endofchunk|>``, the end of an answer in every sample; the
sample's closing ``</s>`` follows ``<|endofchunk|>`` in every training sample and is not scored.
For tagging an option is scored as the answer's first tag, so its end is ``<|endofchunk|>`` or the
``,`` before the next tag (their probabilities summed). ``rank`` ranks by the length-normalised
mean log-probability per scored token (OpenFlamingo's classification evaluation,
``normalize_length=True``), ``rank_sum`` by the summed log-probability. The answer is the best
option (ties: alphabetical), ``label_scores`` holds every option's score and ``score`` the best's;
the run's ``flamingo.decode`` (run.json) says which score they are. Queries without options (open
AQA questions) are answered by generation.

Optional CLAP filtering (the reference gradio demo's trick,
inference/launch_gradio.py): sample N outputs and
keep the one whose CLAP text embedding is nearest the query audio's CLAP embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from .audio import DecodeKey, wave_for
from .config import FlamingoConfig
from .errors import ConfigError, StoreError
from .model import GenerationSettings, generate, postprocess_output, silence_features, tokenize_prompts
from .model.media import pack_window_features
from .model.scoring import answer_token_ids, score_continuations
from .prediction import Prediction
from .prompts import build_prompt, token_counter
from .retrieval import Retriever, Shot
from .store.records import comparable_fingerprint
from .tasks import TaskFamily, get_task
from .vectors import normalize_rows

logger = logging.getLogger(__name__)

DECODE_MODES = {"generate": None, "rank": "mean", "rank_sum": "sum"}  # decode -> the rank score (scoring.SCORE_KINDS)


class ClapReranker:
    """Keep the sampled output whose CLAP text embedding best matches the query audio."""

    def __init__(self, encoder):
        if not hasattr(encoder, "embed_text"):
            raise ConfigError(
                f"CLAP filtering needs a CLAP encoder with embed_text(); {getattr(encoder, 'name', encoder)!r} has none"
            )
        self.encoder = encoder
        self.sample_rate = int(encoder.sample_rate)

    def scores(self, audio_embedding: np.ndarray, texts: list[str]) -> np.ndarray:
        text_emb = normalize_rows(self.encoder.embed_text(texts))
        return text_emb @ normalize_rows(np.asarray(audio_embedding)[None])[0]

    def pick(self, wave: np.ndarray, texts: list[str]) -> tuple[int, np.ndarray]:
        emb = np.asarray(self.encoder.embed([wave]), np.float32)[0]
        scores = self.scores(emb, texts)
        return int(np.argmax(scores)), scores


class RagFlamingo:
    """Retrieval-augmented few-shot Audio Flamingo.

    ``store``: an `IndexStore` with cached window features (``feature_name``); ``model`` /
    ``tokenizer``: `AudioFlamingo` and its AF1 tokenizer; ``window_encoder``: the model's audio
    front end (``window_features(waves) -> (N, W, D), (N, W)``, e.g. clapcap), used for query
    audio only; ``retrieval_encoder``: the encoder the store was built with (checked against it).
    """

    def __init__(
        self,
        store,
        model,
        tokenizer,
        window_encoder,
        retrieval_encoder=None,
        *,
        retriever: Retriever | None = None,
        generation: GenerationSettings | None = None,
        feature_name: str = FlamingoConfig.features,
        audio_slots: int | None = None,
        template: str = "eval",
        max_tokens: int | None = None,
        reranker: ClapReranker | None = None,
        decode: str = "generate",
    ):
        self.store, self.model, self.tokenizer = store, model, tokenizer
        self.window_encoder, self.retrieval_encoder = window_encoder, retrieval_encoder
        self.retriever = retriever or Retriever(store, retrieval_encoder)
        self.generation = generation or GenerationSettings()
        self.template, self.reranker = template, reranker
        cfg = model.config
        self.windows = cfg.windows_per_audio
        self.audio_slots = int(audio_slots or cfg.max_audios)  # the reference pads to max_num_fewshot
        if self.audio_slots * self.windows > cfg.max_num_media:
            raise ConfigError(
                f"audio_slots={self.audio_slots} x {self.windows} windows exceeds the model's "
                f"{cfg.max_num_media} media positions; use at most {cfg.max_audios} slots"
            )
        # prompt + new tokens must fit OPT's learned positions
        self.max_tokens = max_tokens or int(cfg.opt["max_position_embeddings"]) - self.generation.max_new_tokens
        self.shot_features = store.features(feature_name)
        self._check_features(store, feature_name)
        self.pad_window = silence_features(window_encoder).float()
        if self.generation.num_return_sequences > 1 and reranker is None:
            raise ConfigError("generation.num_return_sequences > 1 needs a CLAP reranker (clap_filter.encoder)")
        if decode not in DECODE_MODES:
            raise ConfigError(f"unknown flamingo.decode={decode!r}; use one of {', '.join(DECODE_MODES)}")
        if decode != "generate" and reranker is not None:
            raise ConfigError(
                f"flamingo.decode={decode} scores the options; CLAP filtering needs flamingo.decode=generate"
            )
        self.decode = decode

    @property
    def max_shots(self) -> int:
        """Most in-context examples a prompt can hold (audio slots minus the query)."""
        return self.audio_slots - 1

    def _check_features(self, store, name: str) -> None:
        meta = store.info.features[name]  # present: store.features(name) opened it
        built, fingerprint = meta.fingerprint, getattr(self.window_encoder, "fingerprint", None)
        ours = fingerprint() if built and fingerprint is not None else None
        if ours is not None and comparable_fingerprint(built) != comparable_fingerprint(ours):
            raise StoreError(
                f"{store.root}: the cached '{name}' shot features were made by another window encoder "
                f"({built.get('name')}, {built.get('checkpoint_sha256', '')[:12]}) than the query's "
                f"({ours.get('name')}); use the same checkpoint, or rebuild the features with "
                f"`build_index ... mode=features features={name}`"
            )
        windows, dim = meta.windows, meta.dim
        if (
            windows is not None
            and int(windows) != self.windows
            or dim is not None
            and int(dim) != self.model.config.audio_embed_dim
        ):
            raise StoreError(
                f"{store.root}: cached '{name}' features are {windows} windows x {dim} dims but the "
                f"model takes {self.windows} x {self.model.config.audio_embed_dim}; rebuild them "
                f"with the model's window encoder (`build_index ... features={name}`)"
            )

    @property
    def audio_encoders(self) -> list:
        """The encoders whose sample rates a query must be decoded at for `generate`."""
        return [self.window_encoder] + ([self.reranker.encoder] if self.reranker else [])

    # ------------------------------------------------------------------ the model step
    def prompts(
        self,
        task: str,
        items: Sequence[dict],
        shots: Sequence[Sequence[Shot]],
        options: Sequence[str] | None = None,
        query_options: Sequence[Sequence[str] | None] | None = None,
    ) -> list:
        """One `Prompt` per query (shots beyond the token/window budget are dropped by the builder).
        ``options``: one option list for every query; ``query_options``: one per query."""
        per_query = list(query_options) if query_options is not None else [options] * len(items)
        count = token_counter(self.tokenizer)
        # every audio takes a full slot of W windows in the packed media (the reference's padding)
        return [
            build_prompt(
                task,
                item,
                list(s),
                opts,
                template=self.template,
                default_windows=self.windows,
                max_windows=self.audio_slots * self.windows,
                max_tokens=self.max_tokens,
                count_tokens=count,
                mode=self.retriever.mode,
            )
            for item, s, opts in zip(items, shots, per_query)
        ]

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
    def generate(
        self,
        task: str,
        items: Sequence[dict],
        shots: Sequence[Sequence[Shot]],
        waves: Sequence[dict[DecodeKey, np.ndarray]],
        options: Sequence[str] | None = None,
        query_options: Sequence[Sequence[str] | None] | None = None,
    ) -> list[Prediction]:
        """Answers for a batch of queries whose shots are already retrieved."""
        per_query = list(query_options) if query_options is not None else [options] * len(items)
        ranked = self._ranked_rows(task, per_query)
        prompts = self.prompts(task, items, shots, options, query_options)
        feats, mask = self.media(prompts, [wave_for(w, self.window_encoder) for w in waves])
        ids, attn = tokenize_prompts(self.tokenizer, [p.text for p in prompts])
        rest = [b for b in range(len(prompts)) if b not in ranked]
        answers: dict[int, Prediction] = {}
        if ranked:
            r = torch.tensor(ranked)
            opts = [per_query[b] or [] for b in ranked]
            scored = self._rank(task, [prompts[b] for b in ranked], opts, ids[r], attn[r], feats[r], mask[r])
            answers.update(zip(ranked, scored))
        if rest:
            r = torch.tensor(rest)
            made = self._generate(
                [prompts[b] for b in rest], [waves[b] for b in rest], ids[r], attn[r], feats[r], mask[r]
            )
            answers.update(zip(rest, made))
        return [answers[b] for b in range(len(prompts))]

    def _ranked_rows(self, task: str, per_query: Sequence[Sequence[str] | None]) -> list[int]:
        """The queries answered by ranking their options (decode=rank: those with options)."""
        if self.decode == "generate":
            return []
        spec = get_task(task)
        if not spec.options:
            raise ConfigError(
                f"flamingo.decode={self.decode} scores a query's options, and task {spec.name} offers none "
                f"(classification, tagging with options, yes/no AQA do); use flamingo.decode=generate"
            )
        return [b for b, opts in enumerate(per_query) if opts]

    def _generate(self, prompts, waves, ids, attn, feats, mask) -> list[Prediction]:
        """Generated answers (CLAP-filtered when sampling several)."""
        n = self.generation.num_return_sequences
        out = generate(self.model, ids, attn, feats, mask, self.generation)
        texts = [
            postprocess_output(t).strip()
            for t in self.tokenizer.batch_decode(out.new_tokens, skip_special_tokens=False)
        ]
        answers = []
        for b, p in enumerate(prompts):
            cands = texts[b * n : (b + 1) * n]
            ans = Prediction(cands[0], prompt=p.text, shots=list(p.shots), dropped=len(p.dropped))
            if n > 1 and self.reranker is not None:  # checked in __init__: n > 1 has a reranker
                best, scores = self.reranker.pick(wave_for(waves[b], self.reranker.encoder), cands)
                ans.output, ans.score = cands[best], float(scores[best])
                ans.samples = [(c, float(s)) for c, s in zip(cands, scores)]
            answers.append(ans)
        return answers

    def _rank(self, task: str, prompts, options: Sequence[Sequence[str]], ids, attn, feats, mask) -> list[Prediction]:
        """The best option of each query by the log-likelihood of its answer (see the module docstring)."""
        spec = get_task(task)
        cfg = self.model.config
        end_ids = [cfg.eoc_token_id]
        if spec.family == TaskFamily.TAGGING:  # an option is the first tag: "," or the answer's end follows
            comma = self.tokenizer.encode(",", add_special_tokens=False)
            end_ids += comma if len(comma) == 1 else []
        conts = [
            answer_token_ids(self.tokenizer, p.text, [p.full_text(spec.map_label(o)) for o in opts], 2)
            for p, opts in zip(prompts, options)
        ]
        scores = score_continuations(self.model, ids, attn, feats, mask, conts, end_ids=end_ids)
        kind = DECODE_MODES[self.decode]
        assert kind is not None  # _ranked_rows: decode is a rank mode
        answers = []
        for p, opts, s in zip(prompts, options, scores):
            label_scores = {o: float(v) for o, v in zip(opts, s.get(kind))}
            best = min(label_scores, key=lambda o: (-label_scores[o], o))
            answers.append(
                Prediction(
                    spec.map_label(best),
                    prompt=p.text,
                    shots=list(p.shots),
                    dropped=len(p.dropped),
                    score=label_scores[best],
                    label_scores=label_scores,
                )
            )
        return answers


class FlamingoEngine(Protocol):
    """What the ``flamingo`` predictor uses from an engine: `RagFlamingo` (model.backend=af1) or
    `rag_flamingo.backends.transformers_audio.TransformersAudioEngine` (model.backend=transformers)."""

    store: Any
    retriever: Retriever
    audio_slots: int  # audios a prompt holds, the query included

    @property
    def max_shots(self) -> int: ...

    @property
    def audio_encoders(self) -> list: ...  # the encoders whose sample rates the query is decoded at

    def generate(
        self,
        task: str,
        items: Sequence[dict],
        shots: Sequence[Sequence[Shot]],
        waves: Sequence[dict[DecodeKey, np.ndarray]],
        options: Sequence[str] | None = None,
        query_options: Sequence[Sequence[str] | None] | None = None,
    ) -> list[Prediction]: ...
