#!/usr/bin/env bash
# The autoencoder-family comparison of models/RESULTS.md: every member (ae, sae, dae, vae, dcn) on each
# dataset, next to k-means on the raw features and on 50 principal components of the same samples, with
# each run's final scores from `stdac eval`. Every run resumes where it stopped when this is run again.
#
#   models/autoencoders.sh                                  # the tables, seeds 0-4 (a few minutes)
#   DATASETS=mnist SEEDS=0 models/autoencoders.sh           # MNIST, held out: train split, test scored
#
# DATASETS (iris wine synthetic-control); KINDS (ae sae dae vae dcn); SEEDS (0 1 2 3 4); EXTRA: more
# `stdac train` arguments for every run; STDAC: the binary; OUT: where the run folders go. Prints one line
# per run, "dataset kind seed acc nmi ari", and per dataset and kind the mean and standard deviation over
# the seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
STDAC=${STDAC:-target/release/stdac}
DATASETS=${DATASETS:-iris wine synthetic-control}
KINDS=${KINDS:-ae sae dae vae dcn}
SEEDS=${SEEDS:-0 1 2 3 4}
EXTRA=${EXTRA:-}
OUT=${OUT:-runs/autoencoders}
mkdir -p "$OUT"
results="$OUT/results.txt"
: > "$results"

# The last line of a command's output: its metrics JSON.
scores() { tail -n 1 | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["acc"], s["nmi"], s["ari"])'; }

for dataset in $DATASETS; do
    for method in kmeans pca-kmeans; do
        line=$("$STDAC" baseline --dataset "$dataset" --method "$method" $( [[ $dataset == *mnist ]] && echo --split test ) | scores)
        echo "$dataset $method - $line" | tee -a "$results"
    done
    for kind in $KINDS; do
        for seed in $SEEDS; do
            run="$OUT/$dataset-$kind-$seed"
            # shellcheck disable=SC2086
            "$STDAC" train --model "$kind" --dataset "$dataset" --seed "$seed" --out "$run" $EXTRA > "$run.log" 2>&1
            line=$("$STDAC" eval --checkpoint "$run" | scores)
            echo "$dataset $kind $seed $line" | tee -a "$results"
        done
    done
done

echo
echo "| dataset | method | runs | ACC | NMI | ARI |"
echo "|---|---|---|---|---|---|"
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    dataset, method, seed, *values = line.split()
    rows.setdefault((dataset, method), []).append([float(v) for v in values])
for (dataset, method), runs in rows.items():
    cells = []
    for i in range(3):
        values = [r[i] for r in runs]
        sd = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        cells.append(f"{statistics.mean(values):.4f}{sd}")
    print(f"| {dataset} | {method} | {len(runs)} | " + " | ".join(cells) + " |")
PY
