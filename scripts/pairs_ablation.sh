#!/usr/bin/env bash
# Pairs mix x steps ablation (issue #11): which leave-one-corpus-out pair mix makes embeddings transfer.
#
#   scripts/pairs_ablation.sh [MIX ...]     (`make ablation` runs it with the default mixes, `chosen` below)
#
# Every pair source is outside both evaluation tracks (core.pairs.sources, KJV/WEB verses) and every pair file is
# checked with --check-tracks strict. Each mix trains a shipped recipe (CONFIG; adapters/smollm2-135m-embed.json) for
# STEPS steps with a checkpoint at STEPS/2; both are scored on the transfer track and on two local tasks
# (20ng-s2s, trec-fine) in the adapter's own setting (PROMPT, POOLING) into results/ablation/. Everything resumes:
# pair files and finished runs are kept, a stopped run continues from its checkpoint, scored cells are skipped.
# A recipe variant: RECIPE="--temperature 0.1 --lr 1e-4" TAG=t01 trains into RUNS/MIX.TAG (rows named so).
# PROMPT=summarize or POOLING=weighted trains and scores in that setting instead of the recipe's own.
# CONFIG=adapters/gemma3-270m-embed.json trains another shipped recipe (its base model, prompt and pooling).
# A mix ending in -hn has a hard negative per pair (core.pairs --negatives) and trains with --hard-negatives.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PAIRS=${PAIRS:-build/pairs}
RUNS=${RUNS:-build/ablation}
RESULTS=${RESULTS:-results/ablation}
STEPS=${STEPS:-200}
CONFIG=${CONFIG:-adapters/smollm2-135m-embed.json}
read -r -a RECIPE <<< "${RECIPE:-}"
TAG=${TAG:-}
recipe_value() { sed -n "s/^ *\"$1\": *\"\([^\"]*\)\".*/\1/p" "$CONFIG"; }  # a string setting of the recipe
[ -f "$CONFIG" ] || { echo "no recipe at CONFIG=$CONFIG; the shipped ones are adapters/*.json" >&2; exit 2; }
BASE=$(recipe_value base_model)
PROMPT=${PROMPT:-$(recipe_value prompt)}
POOLING=${POOLING:-$(recipe_value pooling)}
TASKS=${TASKS:-transfer,20ng-s2s,trec-fine}
mkdir -p "$PAIRS" "$RUNS"

pair_file() {  # PART: build the pair file PART once (only the parts a chosen mix needs)
    local out="$PAIRS/$1.jsonl" source="${1#*-}" method="${1%%-*}" n
    [ -s "$out" ] && return
    case "$1" in
        bible) "$PY" -m core.pairs --source bible --method bible --n 1200 --out "$out" --check-tracks strict; return ;;
        passages | passages3k)  # passages3k: 100 steps of batch 32 see each pair once
            n=1200; [ "$1" = passages3k ] && n=3200
            "$PY" -m core.pairs --source bible --method bible-passages --n "$n" --out "$out" --check-tracks strict
            return ;;
        passages-hn)  # the passages, each with a hard negative mined among the other pairs (base encoder)
            pair_file passages
            "$PY" -m core.pairs --source "$PAIRS/passages.jsonl" --method file --negatives --out "$out" \
                --check-tracks strict
            return ;;
        *-quotes) n=306 ;;
        *-pyjokes) n=283 ;;
        para-one-liners) n=500 ;;  # a fifth of the generations survive the filters; each takes ~2 s on a CPU
        dropout-one-liners) n=1000 ;;
    esac
    [ "$method" = para ] && method=paraphrase
    "$PY" -m core.pairs --source "$source" --method "$method" --n "$n" --out "$out" --check-tracks strict
}

declare -A MIXES=(
    [bible]="bible"
    [para]="para-quotes para-pyjokes para-one-liners"
    [dropout]="dropout-quotes dropout-pyjokes dropout-one-liners"
    [para+bible]="para-quotes para-pyjokes para-one-liners bible"
    [passages]="passages"
    [passages3k]="passages3k"
    [passages-hn]="passages-hn"
    [para+passages]="para-quotes para-pyjokes para-one-liners passages"
    [para+bible+dropout]="para-quotes para-pyjokes para-one-liners bible dropout-quotes dropout-pyjokes dropout-one-liners"
)
chosen=("$@")
[ ${#chosen[@]} -gt 0 ] || chosen=(bible para dropout para+bible para+bible+dropout passages para+passages)

models=()
for mix in "${chosen[@]}"; do
    [ -n "${MIXES[$mix]:-}" ] || { echo "unknown mix '$mix'; choose from: ${!MIXES[*]}" >&2; exit 2; }
    for part in ${MIXES[$mix]}; do pair_file "$part"; done
    file="$PAIRS/mix-$mix.jsonl"
    (for part in ${MIXES[$mix]}; do cat "$PAIRS/$part.jsonl"; done) > "$file.tmp" && mv "$file.tmp" "$file"
    run="$RUNS/$mix${TAG:+.$TAG}"
    negatives=()
    [[ $mix == *-hn ]] && negatives=(--hard-negatives)  # these pair files carry a mined negative per pair
    if [ ! -f "$run/adapter_config.json" ]; then
        resume=()
        compgen -G "$run/checkpoints/step-*" >/dev/null && resume=(--resume)
        "$PY" -m core.train --config "$CONFIG" --pairs "$file" --steps "$STEPS" \
            --checkpoint-every $((STEPS / 2)) --keep-checkpoints 2 --lora-dropout 0.1 --prompt "$PROMPT" \
            --pooling "$POOLING" --out "$run" --no-progress "${negatives[@]}" "${RECIPE[@]}" "${resume[@]}"
    fi
    halfway=$(compgen -G "$run/checkpoints/step-*" | sort | head -n 1)
    models+=("$BASE+$halfway" "$BASE+$run")
done
"$PY" -m analysis.clustering --models "$(IFS=,; echo "${models[*]}")" --prompts "$PROMPT" --poolings "$POOLING" \
    --tasks "$TASKS" --out "$RESULTS" --no-baseline --quiet
