"""`TransformersAudioEngine`: retrieval-augmented ICL for the audio-language models of transformers
that splice audio tokens into their language model's context (Audio Flamingo 3, Music Flamingo,
Qwen2-Audio; Voxtral through `rag_flamingo.backends.voxtral`), through each model's own processor,
chat template and ``generate``; built from a ``model`` config by `rag_flamingo.backends.loading`.

    (the runner: decode at the processor's rate ─ retrieval ─ shots) ─┐
    shot audio: store.audio_path(row) ─ load_audio ────────────────────┼─ processor, one audio at a time:
    query audio ───────────────────────────────────────────────────────┘   features + its placeholder expansion
    chat_icl.chat_messages ─ processor.apply_chat_template ─ expand each placeholder in prompt order ─ tokenize
    ─ model.generate(input_ids, attention_mask, every audio's features in prompt order) ─ answer text

Several audios per prompt: the processors of AF3 and Music Flamingo take one audio per text
(``AudioFlamingo3Processor.validate_inputs``), so the engine calls the processor once per audio (a
text holding just the audio placeholder), keeps that audio's features and its expanded placeholder
(its audio tokens, with Music Flamingo's begin/end tokens), writes each expansion at its place in the
rendered prompt and concatenates the features in prompt order. Each model merges audio features
into the placeholder positions in order (``masked_scatter`` over the flattened batch), so every
audio reaches its own span; for a prompt with one audio the inputs equal the processor's own
(tests/test_backends.py checks both against the model's forward).

Chat templates: a template that renders one audio placeholder per audio part (Qwen2-Audio's
``Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>``) is used as is. AF3's template writes at most one
``<sound>`` per message, ahead of its text; for a message with several audios (``single_turn`` with
shots) the engine writes the placeholders inline in the message text, which the template keeps
verbatim, so each audio stays in front of its own text.

Budget: at most ``max_audios`` audios (shots + query), ``max_seconds`` of each audio, and the
expanded prompt plus ``max_new_tokens`` within the model's context; shots that do not fit, or whose
audio cannot be decoded, are dropped (least similar first, like AF1's prompts) and counted.

Rank classification (``flamingo.decode=rank`` / ``rank_sum``) as for AF1: each query's prompt is
prefilled once and every option's answer tokens (then the end of the turn, the checkpoint's EOS)
continue from its KV cache (`rag_flamingo.model.scoring.score_after_prompt`). The CLAP filter
(``flamingo.clap_filter.samples`` > 1) samples that many answers and keeps the one nearest the
query audio in CLAP space (`rag_flamingo.engine.clap_filtered`). A ``streamer`` (transformers'
``TextIteratorStreamer``) receives the tokens of a one-query ``generate`` as they come.

Memory: ``dtype`` auto is bf16 on CUDA and fp32 on CPU; ``device_map`` (e.g. ``auto``) and
``offload_folder`` are handed to ``from_pretrained`` for the 7-8B models (accelerate). One model
per process: the engine is built once and shared by the predictors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..audio import DecodeKey, load_audio, wave_for
from ..engine import ClapReranker, best_option, check_decode, clap_filtered, option_end_ids, ranked_rows
from ..errors import AudioError, ConfigError
from ..model.generation_settings import GenerationSettings
from ..model.scoring import answer_token_ids, score_after_prompt
from ..prediction import Prediction
from ..prompts import drop_order, get_task  # drop_order: the one drop policy of AF1's prompts, least similar first
from ..retrieval import Retriever, Shot
from .chat_icl import chat_messages, check_icl_format, count_audios
from .decoding import explicit_generation

logger = logging.getLogger(__name__)

TEXT_KEYS = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class ProcessorAudio:
    """The query audio the model's processor takes, as the runner decodes it (`rag_flamingo.audio.decode_key`):
    its sample rate and the seconds read from each clip."""

    name: str
    sample_rate: int
    max_seconds: float | None = None


@dataclass
class EncodedAudio:
    """One audio through the processor: its features (batch rows of its own) and the text its
    placeholder expands to."""

    features: dict[str, torch.Tensor]
    expansion: str


class TransformersAudioEngine:
    """Retrieval-augmented few-shot answers from a transformers audio-language model.

    ``model``: e.g. ``AudioFlamingo3ForConditionalGeneration``; ``processor``: its ``AutoProcessor``
    (feature extractor, tokenizer, chat template, ``audio_token``); ``retrieval_encoder``: the
    store's encoder (for the default retriever). ``max_audios``: audios per prompt, the query
    included; ``max_seconds``: seconds of each audio given to the model; ``max_context``: the
    model's context (default: the language model's ``max_position_embeddings``).
    """

    def __init__(
        self,
        store,
        model,
        processor,
        retrieval_encoder=None,
        *,
        retriever: Retriever | None = None,
        generation: GenerationSettings | None = None,
        icl_format: str = "single_turn",
        max_audios: int = 8,
        max_seconds: float | None = 30.0,
        max_context: int | None = None,
        name: str = "",
        reranker: ClapReranker | None = None,
        decode: str = "generate",
    ):
        self.store, self.model, self.processor = store, model, processor
        self.retrieval_encoder = retrieval_encoder
        self.retriever = retriever or Retriever(store, retrieval_encoder)
        self.generation = generation or GenerationSettings()
        self.icl_format = check_icl_format(icl_format)
        self.name = name or type(model).__name__
        if self.generation.reference_cache_quirk:
            raise ConfigError("model.generation.reference_cache_quirk is AF1's (model.backend=af1); set it false")
        if self.generation.num_return_sequences > 1 and reranker is None:
            raise ConfigError("generation.num_return_sequences > 1 needs a CLAP reranker (clap_filter.encoder)")
        self.reranker = reranker
        self.decode = check_decode(decode, reranker)
        token = getattr(processor, "audio_token", None)
        if not token:
            raise ConfigError(f"{type(processor).__name__} has no audio_token: not an audio-language model processor")
        self.audio_token: str = str(token)
        self.tokenizer = processor.tokenizer
        self.sample_rate = int(processor.feature_extractor.sampling_rate)
        self.audio_slots = int(max_audios)
        if self.audio_slots < 1:
            raise ConfigError(f"model.max_audios={max_audios}: a prompt holds at least the query's audio")
        self.max_seconds = float(max_seconds) if max_seconds else None
        text_config = getattr(model.config, "text_config", model.config)
        context = int(max_context or getattr(text_config, "max_position_embeddings", 0) or 0)
        if context <= self.generation.max_new_tokens:
            raise ConfigError(
                f"model.max_context={context} leaves no room for {self.generation.max_new_tokens} new tokens"
            )
        self.max_tokens = context - self.generation.max_new_tokens
        self.query_audio = ProcessorAudio(f"{self.name}-audio", self.sample_rate, self.max_seconds)
        # our decoding only: the checkpoint's generation_config.json decides nothing but its token ids
        self.generation_config, self.decoding = explicit_generation(model, self.generation, self.tokenizer)

    @property
    def max_shots(self) -> int:
        """Most in-context examples a prompt can hold (audios minus the query)."""
        return self.audio_slots - 1

    @property
    def audio_encoders(self) -> list:
        """What the query is decoded for: the processor's sample rate, ``max_seconds`` read (and the
        CLAP filter's encoder)."""
        return [self.query_audio] + ([self.reranker.encoder] if self.reranker else [])

    # ------------------------------------------------------------------ audio
    def encode_audio(self, wave: np.ndarray) -> EncodedAudio:
        """``wave`` through the processor alone: its features and its expanded placeholder."""
        out = self.processor(
            text=[self.audio_token],
            audio=[np.asarray(wave, np.float32)],
            sampling_rate=self.sample_rate,
            add_special_tokens=False,
            return_tensors="pt",
        )
        ids = out["input_ids"][0][out["attention_mask"][0].bool()]
        expansion = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        features = {k: v for k, v in out.items() if k not in TEXT_KEYS and isinstance(v, torch.Tensor)}
        return EncodedAudio(features, expansion)

    def shot_audio(self, shot: Shot) -> np.ndarray:
        item = shot.item
        return load_audio(
            self.store.audio_path(shot.row),
            self.sample_rate,
            start=item.get("start"),
            end=item.get("end"),
            max_seconds=self.max_seconds,
        )

    # ------------------------------------------------------------------ text
    def render(self, messages: list[dict]) -> str:
        """The chat template's text of ``messages`` up to the assistant's turn, one placeholder per
        audio in prompt order (inline in the message text where the template would merge them)."""
        clean = [
            {
                "role": m["role"],
                "content": [
                    p if p["type"] == "audio" else {**p, "text": p["text"].replace(self.audio_token, "")}
                    for p in m["content"]
                ],
            }
            for m in messages
        ]
        audios = count_audios(clean)
        text = self.processor.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
        if text.count(self.audio_token) == audios:
            return text
        inline = [
            {
                "role": m["role"],
                "content": "".join(self.audio_token if p["type"] == "audio" else p["text"] for p in m["content"]),
            }
            for m in clean
        ]
        text = self.processor.apply_chat_template(inline, tokenize=False, add_generation_prompt=True)
        if text.count(self.audio_token) != audios:
            raise ConfigError(
                f"the chat template of {self.name} does not give each of {audios} audios its own "
                f"{self.audio_token} placeholder; it cannot hold this prompt"
            )
        return text

    def expand(self, text: str, audios: Sequence[EncodedAudio]) -> str:
        """``text`` with its i-th audio placeholder replaced by audio i's expansion."""
        pieces = text.split(self.audio_token)
        if len(pieces) != len(audios) + 1:
            raise ConfigError(f"{len(pieces) - 1} audio placeholders in the prompt for {len(audios)} audios")
        return pieces[0] + "".join(a.expansion + rest for a, rest in zip(audios, pieces[1:]))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def prompt(
        self,
        task,
        item: dict,
        shots: Sequence[Shot],
        options: Sequence[str] | None,
        shot_audio: Mapping[int, EncodedAudio | None],
        query: EncodedAudio,
    ) -> tuple[str, list[Shot], int, list[EncodedAudio]]:
        """(rendered prompt, kept shots, how many were dropped, the audios in prompt order): shots
        without usable audio, beyond ``max_audios`` or beyond the context are dropped."""
        encoded = {row: a for row, a in shot_audio.items() if a is not None}
        usable = [s for s in shots if s.row in encoded]
        order = drop_order(usable)
        kept = list(range(len(usable)))
        while len(kept) > self.max_shots:
            kept.remove(order.pop(0))

        def build(indices: list[int]) -> tuple[str, list[EncodedAudio], int]:
            chosen = [usable[i] for i in indices]
            text = self.render(chat_messages(task, item, chosen, options, self.icl_format, self.retriever.mode))
            audios = [encoded[s.row] for s in chosen] + [query]
            return text, audios, self.count_tokens(self.expand(text, audios))

        text, audios, n = build(kept)
        while n > self.max_tokens and kept:
            kept.remove(order.pop(0))
            text, audios, n = build(kept)
        if n > self.max_tokens:
            raise ConfigError(
                f"query {item.get('id', '?')} alone takes {n} tokens > {self.max_tokens} "
                f"(model.max_context - max_new_tokens); lower model.max_seconds or shorten the options list"
            )
        dropped = len(shots) - len(kept)
        if dropped:
            logger.warning(
                "query %s: dropped %d of %d shots (undecodable audio, audio count or context budget)",
                item.get("id", "?"),
                dropped,
                len(shots),
            )
        return text, [usable[i] for i in kept], dropped, audios

    def inputs(self, texts: Sequence[str], audios: Sequence[Sequence[EncodedAudio]]) -> dict[str, torch.Tensor]:
        """The model's inputs for a batch: each prompt expanded and tokenized (left padding), and the
        features of every audio of the batch in prompt order."""
        expanded = [self.expand(t, a) for t, a in zip(texts, audios)]
        batch = dict(self.tokenizer(expanded, padding=True, padding_side="left", return_tensors="pt"))
        flat = [a for per_prompt in audios for a in per_prompt]
        for key in flat[0].features:
            batch[key] = torch.cat([a.features[key] for a in flat])
        device, dtype = self.model.device, self.model.dtype
        return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}

    # ------------------------------------------------------------------ the model step
    def generation_kwargs(self) -> dict[str, Any]:
        """What ``generate`` gets besides the inputs: our explicit config (`decoding.explicit_generation`)."""
        return {"generation_config": self.generation_config}

    @torch.inference_mode()
    def generate(
        self,
        task,
        items: Sequence[dict],
        shots: Sequence[Sequence[Shot]],
        waves: Sequence[dict[DecodeKey, np.ndarray]],
        options: Sequence[str] | None = None,
        query_options: Sequence[Sequence[str] | None] | None = None,
        streamer: Any = None,
    ) -> list[Prediction]:
        """Answers for a batch of queries whose shots are already retrieved: generated, or with
        ``decode=rank`` the best of each query's options. ``streamer``: fed a one-query answer's tokens."""
        per_query = list(query_options) if query_options is not None else [options] * len(items)
        ranked = ranked_rows(self.decode, task, per_query)
        shot_audio: dict[int, EncodedAudio | None] = {}
        for shot in {s.row: s for group in shots for s in group}.values():
            try:
                shot_audio[shot.row] = self.encode_audio(self.shot_audio(shot))
            except AudioError as exc:
                logger.warning("shot %s left out: %s", shot.id, exc)
                shot_audio[shot.row] = None
        texts, kept, dropped, audios = [], [], [], []
        for item, group, opts, w in zip(items, shots, per_query, waves):
            query = self.encode_audio(wave_for(w, self.query_audio))
            text, used, n_dropped, prompt_audios = self.prompt(task, item, group, opts, shot_audio, query)
            texts.append(text)
            kept.append(used)
            dropped.append(n_dropped)
            audios.append(prompt_audios)
        records = [dict(prompt=t, shots=s, dropped=d) for t, s, d in zip(texts, kept, dropped)]
        answers: dict[int, Prediction] = {}
        for b in ranked:
            answers[b] = self._rank(task, texts[b], audios[b], per_query[b] or [], records[b])
        rest = [b for b in range(len(items)) if b not in answers]
        if rest:
            made = self._generate([texts[b] for b in rest], [audios[b] for b in rest], streamer)
            for b, candidates in zip(rest, made):
                answers[b] = clap_filtered(self.reranker, candidates, waves[b], **records[b])
        return [answers[b] for b in range(len(items))]

    def _generate(self, texts: list[str], audios: list[list[EncodedAudio]], streamer: Any = None) -> list[list[str]]:
        """Each prompt's generated answers (``num_return_sequences`` of them: samples for the CLAP filter)."""
        batch = self.inputs(texts, audios)
        n = self.generation.num_return_sequences
        with torch.random.fork_rng(devices=[self.model.device] if self.model.device.type == "cuda" else []):
            if self.generation.do_sample and self.generation.seed is not None:
                torch.manual_seed(self.generation.seed)
            out = self.model.generate(**batch, **self.generation_kwargs(), streamer=streamer)
        new = out[:, batch["input_ids"].shape[1] :]
        outputs = [o.strip() for o in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return [outputs[b * n : (b + 1) * n] for b in range(len(texts))]

    def answer_ids(self, text: str, audios: list[EncodedAudio], answers: Sequence[str]) -> list[list[int]]:
        """The tokens each answer adds after the expanded prompt ``text`` (tokenized whole, as generated)."""
        expanded = self.expand(text, audios)
        return answer_token_ids(self.tokenizer, expanded, [expanded + a for a in answers], 0)

    def _rank(
        self, task: str, text: str, audios: list[EncodedAudio], options: Sequence[str], record: dict
    ) -> Prediction:
        """The best option by the log-likelihood of its answer then the end of the turn (shared prefix)."""
        spec = get_task(task)
        eos = self.generation_config.eos_token_id
        end_ids = option_end_ids(task, self.tokenizer, [eos] if isinstance(eos, int) else list(eos))
        conts = self.answer_ids(text, audios, [spec.map_label(o) for o in options])
        scores = score_after_prompt(self.model, self.inputs([text], [audios]), conts, end_ids=end_ids)
        return best_option(task, options, scores, self.decode, **record)
