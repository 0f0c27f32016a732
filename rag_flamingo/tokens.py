"""AF1's special strings (added in its foundation/src/factory.py), shared by the prompt builder and the
model's tokenizer."""

BOS = "</s>"  # written at the start of every sample; the tokenizer prepends another (ids [2, 2, ...])
EOS = "</s>"
MEDIA_TOKEN = "<audio>"
EOC_TOKEN = "<|endofchunk|>"
SEP_TOKEN = "<SEP>"
