#!/usr/bin/env bash
# The README's demo: every tool of the toolkit on the embedded default (the offline CARLA-compatible
# world), with no simulator and no download. Everything lands in demo_out/ (recreated on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=demo_out
DATA=$OUT/open_set
RUN=$OUT/run_prototype
rm -rf "$OUT"
step() { printf '\n==== %s\n' "$*"; }

step "1/8 collect the open-set dataset (offline world: train towns, then test towns, three scenarios)"
vca-carla collect --split train --scenario all --episodes 1 --frames 20 --width 320 --height 180 --out "$DATA"
vca-carla collect --split test --scenario all --episodes 1 --frames 20 --width 320 --height 180 --out "$DATA" --seed 100

step "2/8 dataset statistics (pixels per class, frames per town and scenario)"
vca-analyze stats "$DATA" --out "$OUT/stats"

step "3/8 train the tiny two-stream prototype open-set baseline on the CPU"
vca-baseline train --model prototype --config tiny --data "$DATA" --out "$RUN"

step "4/8 evaluate: mIoU on known classes, CA-IoU on the test split's unknown objects, per scenario"
vca-baseline eval "$RUN" --data "$DATA" --save-predictions "$OUT/predictions"

step "4b/8 look at the predictions: one frame per scenario of the test towns, RGB | ground truth | prediction | unknown probability"
vca-baseline predict "$RUN" "$DATA"/episodes/Town02_*_100.h5 --frames middle --panel --sheet "$OUT/panels.png" \
    --out "$OUT/panels" --quiet
ls "$OUT"/panels/*_panel.png

step "5/8 score the saved predictions as files against a Cityscapes-style export: the same mIoU/CA-IoU, and the unknown class as a pixel anomaly detector (AP, AUROC, FPR@95, component F1)"
vca-carla export "$DATA" --format cityscapes --split test --out "$OUT/cityscapes"
vca-baseline metrics --kind semantic --pred "$OUT/predictions" --pred-suffix _labelTrainIds \
    --gt "$OUT/cityscapes/gtFine" --gt-suffix _gtFine_labelTrainIds --out "$OUT/metrics_semantic.json"
vca-baseline metrics --kind anomaly --pred "$OUT/predictions" --pred-suffix _unknownScore \
    --gt "$OUT/cityscapes/gtFine" --gt-suffix _gtFine_labelTrainIds --anomaly-label 254 \
    --components --min-component-size 20 --min-instance-size 20 --out "$OUT/metrics_anomaly.json"

step "5b/8 SLEEG: a closed-set segmenter (unknowns ignored), then SLEEG's OoD head on it with pasted anomalies; AP / AUROC / FPR@95 against the prototype model's unknown probability on the same test frames"
vca-baseline train --model segmenter --config tiny --data "$DATA" --out "$OUT/run_segmenter" --quiet
vca-baseline train --model sleeg --config sleeg-tiny --set model.segmenter=run:"$OUT/run_segmenter" \
    --data "$DATA" --out "$OUT/run_sleeg" --quiet
vca-baseline eval "$OUT/run_sleeg" --data "$DATA" --save-predictions "$OUT/predictions_sleeg" --quiet
vca-baseline metrics --kind anomaly --pred "$OUT/predictions_sleeg" --pred-suffix _anomalyScore \
    --gt "$OUT/cityscapes/gtFine" --gt-suffix _gtFine_labelTrainIds --anomaly-label 254 \
    --out "$OUT/metrics_anomaly_sleeg.json" > /dev/null
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print(f"{'unknown objects of the test towns':34s} {'AP':>6s} {'AUROC':>6s} {'FPR@95':>7s}")
for name, path in (("prototype, unknown probability", "metrics_anomaly.json"), ("SLEEG (paper options)", "metrics_anomaly_sleeg.json")):
    p = json.load(open(f"{out}/{path}"))["results"]["pixel"]
    print(f"{name:34s} {100 * p['ap']:6.1f} {100 * p['auroc']:6.1f} {100 * p['fpr_at_tpr']:7.1f}")
PY

step "6/8 prototypes of the unknown objects and their dendrogram (backbone of the trained run)"
vca-analyze dendrogram "$DATA" --weights "run:$RUN" --layer layer3 --max-images 20 --out "$OUT/dendrogram.png" \
    --save-prototypes "$OUT/prototypes.npz"

step "7/8 motion track: export KITTI-MOTS-style sequences and propose moving/static labels from flow"
vca-carla export "$DATA" --format kitti-mots --split test --out "$OUT/carla_mots"
vca-annotate propose "$OUT/carla_mots" --flow-dir "$OUT/carla_mots_flow"
vca-analyze stats --labels "$OUT/carla_mots/motion_labels.json" --out "$OUT/motion_stats"

step "8/8 export the proposals in the VCA release form (COCO JSON, moving=1 / static=2)"
vca-annotate export "$OUT/carla_mots" --format coco --include-proposals --out "$OUT/motion_coco.json"

printf '\nDemo done: dataset %s, run %s, figures %s/stats and %s/dendrogram.png, prediction panels %s/panels.png.\n' "$DATA" "$RUN" "$OUT" "$OUT" "$OUT"
printf 'Training curves and panels: tensorboard --logdir %s\n' "$RUN"
printf 'Label the exported tracks by hand with: vca-annotate %s/carla_mots\n' "$OUT"
