"""mistral-common's own encoding of a chat, the oracle for Voxtral's prompt ids
(tests/test_backends_voxtral.py). Run by the isolated venv of scripts/setup_mistral_oracle.sh (mistral-common
needs numpy < 2.4), never by the project's: it imports nothing of rag_flamingo.

stdin: {"tekken": path to a tekken.json, "chats": [[{"role": "user" | "assistant", "content":
[{"type": "audio", "path": a wav file} | {"type": "text", "text": ...}]}, ...], ...]}; stdout:
{"ids": [[...], ...], "audios": [n, ...]}: ``MistralTokenizer.encode_chat_completion`` of each chat (the
last message the user's) and how many audios it holds. stdin {"data_file": name}: stdout {"path": ...},
that file of mistral-common's own data folder (the tekken vocabularies it ships).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from mistral_common.protocol.instruct.chunk import AudioChunk, TextChunk
from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer


def chunk(part: dict):
    if part["type"] == "audio":
        return AudioChunk(input_audio=base64.b64encode(Path(part["path"]).read_bytes()).decode())
    return TextChunk(text=part["text"])


def main() -> None:
    request = json.load(sys.stdin)
    if "data_file" in request:
        import mistral_common

        path = Path(mistral_common.__file__).parent / "data" / request["data_file"]
        json.dump({"path": str(path) if path.is_file() else None}, sys.stdout)
        return
    tokenizer = MistralTokenizer.from_file(request["tekken"])
    ids, audios = [], []
    for chat in request["chats"]:
        messages = [
            UserMessage(content=[chunk(p) for p in m["content"]])
            if m["role"] == "user"
            else AssistantMessage(content="".join(p["text"] for p in m["content"]))
            for m in chat
        ]
        tokenized = tokenizer.encode_chat_completion(ChatCompletionRequest(messages=messages))
        ids.append(tokenized.tokens)
        audios.append(len(tokenized.audios))
    json.dump({"ids": ids, "audios": audios}, sys.stdout)


if __name__ == "__main__":
    main()
