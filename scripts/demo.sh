#!/usr/bin/env bash
# Set up .venv, then run the main job on the embedded demo set (nothing to download):
#   1. build_index: generate the demo audio (12 classes of synthetic sound events, 96 train + 48 test
#      clips), embed the train split with the offline aisfx encoder, build the FAISS index, and print
#      what it built plus label precision@5 of the embeddings against chance;
#   2. evaluate: few-shot classification of the 48 test clips with the training-free predictors
#      (knn, prototype) at 1, 4 and 8 shots retrieved from that index; prints the table and writes
#      predictions, metrics and the metric-vs-shots plot under outputs/evaluate/.
# RAG_FLAMINGO_CHECKPOINT=/path/foundation.pt (or a converted .safetensors, or =hub for the released
# nvidia/audio-flamingo file through the Hugging Face cache) adds the flamingo predictor; it also
# needs the released clapcap weights (microsoft/msclap) for the shot features and the query.
# Everything lands under ${RAG_FLAMINGO_CACHE_ROOT:-~/.cache/rag_flamingo}; reruns reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

predictors=knn,prototype
build_extra=() eval_extra=()
if [ -n "${RAG_FLAMINGO_CHECKPOINT:-}" ]; then
  predictors=knn,prototype,flamingo
  build_extra=(features=clapcap)
  [ "$RAG_FLAMINGO_CHECKPOINT" = hub ] || eval_extra=("model.checkpoint.path=${RAG_FLAMINGO_CHECKPOINT}")
fi

echo "== build_index (demo set, aisfx encoder)"
build_index dataset=demo progress=false "${build_extra[@]}"

echo
echo "== evaluate (few-shot classification of the demo test split)"
evaluate dataset=demo task=classification predictor="$predictors" shots=1,4,8 progress=false "${eval_extra[@]}"
