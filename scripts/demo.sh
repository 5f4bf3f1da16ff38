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

step "1/9 collect the open-set dataset (offline world: train towns, then test towns, three scenarios)"
vca-carla collect --split train --scenario all --episodes 1 --frames 20 --width 320 --height 180 --out "$DATA"
vca-carla collect --split test --scenario all --episodes 1 --frames 20 --width 320 --height 180 --out "$DATA" --seed 100

step "2/9 dataset statistics (pixels per class, frames per town and scenario)"
vca-analyze stats "$DATA" --out "$OUT/stats"

step "3/9 train the tiny two-stream prototype open-set baseline on the CPU"
vca-baseline train --model prototype --config tiny --data "$DATA" --out "$RUN"

step "4/9 evaluate: mIoU on known classes, CA-IoU on the test split's unknown objects, per scenario"
vca-baseline eval "$RUN" --data "$DATA" --save-predictions "$OUT/predictions"

step "4b/9 look at the predictions: one frame per scenario of the test towns, RGB | ground truth | prediction | unknown probability"
vca-baseline predict "$RUN" "$DATA"/episodes/Town02_*_100.h5 --frames middle --panel --sheet "$OUT/panels.png" \
    --out "$OUT/panels" --quiet
ls "$OUT"/panels/*_panel.png

step "5/9 score the saved predictions as files against a Cityscapes-style export: the same mIoU/CA-IoU, and the unknown class as a pixel anomaly detector (AP, AUROC, FPR@95, component F1)"
vca-carla export "$DATA" --format cityscapes --split test --out "$OUT/cityscapes"
vca-baseline metrics --kind semantic --pred "$OUT/predictions" --pred-suffix _labelTrainIds \
    --gt "$OUT/cityscapes/gtFine" --gt-suffix _gtFine_labelTrainIds --out "$OUT/metrics_semantic.json"
vca-baseline metrics --kind anomaly --pred "$OUT/predictions" --pred-suffix _unknownScore \
    --gt "$OUT/cityscapes/gtFine" --gt-suffix _gtFine_labelTrainIds --anomaly-label 254 \
    --components --min-component-size 20 --min-instance-size 20 --out "$OUT/metrics_anomaly.json"

step "5b/9 SLEEG: a closed-set segmenter (unknowns ignored), then SLEEG's OoD head on it with pasted anomalies; AP / AUROC / FPR@95 against the prototype model's unknown probability on the same test frames"
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

step "6/9 prototypes of the unknown objects and their dendrogram (backbone of the trained run)"
vca-analyze dendrogram "$DATA" --weights "run:$RUN" --layer layer3 --max-images 20 --out "$OUT/dendrogram.png" \
    --save-prototypes "$OUT/prototypes.npz"

step "7/9 motion track: a busier collection at 640x360 in dry daylight, traffic and walkers starting near the ego's road (moving objects of hundreds of pixels, as in KITTI), exported as KITTI-MOTS-style sequences (train and test towns); moving/static proposals from flow"
MOTS=$OUT/carla_mots
MW=$OUT/motion_world
vca-carla collect --split train --scenario all --episodes 1 --frames 20 --width 640 --height 360 --parked 6 \
    --vehicles 30 --walkers 30 --weather ClearNoon,CloudyNoon,ClearSunset --traffic-radius 50 --out "$MW"
vca-carla collect --split test --scenario all --episodes 1 --frames 20 --width 640 --height 360 --parked 6 \
    --vehicles 30 --walkers 30 --weather ClearNoon,CloudyNoon,ClearSunset --traffic-radius 50 --out "$MW" --seed 100
vca-carla export "$MW" --format kitti-mots --split train --out "$MOTS/train"
vca-carla export "$MW" --format kitti-mots --split test --out "$MOTS/test"
# the flow PNGs land where VCANet's flow cache looks (ROOT/vca_flow), so step 9 reuses them
vca-annotate propose "$MOTS/test" --flow-dir "$MOTS/test/vca_flow"
vca-analyze stats --labels "$MOTS/test/motion_labels.json" --out "$OUT/motion_stats"

step "8/9 export the proposals in the VCA release form (COCO JSON, moving=1 / static=2)"
vca-annotate export "$MOTS/test" --format coco --include-proposals --out "$OUT/motion_coco.json"

step "9/9 VCANet (tiny): phase 1 panoptic, then phase 2 class-agnostic on ego-flow-suppressed and on raw flow; CAQ of the moving objects in the test towns"
vca-baseline train --model vcanet --config vcanet-tiny --data "$MOTS" --out "$OUT/run_vcanet_p1" --quiet
for FLOW in suppressed raw; do
    vca-baseline train --model vcanet --config vcanet-tiny --set model.phase=2 --set train.init_from="$OUT/run_vcanet_p1" \
        --set data.flow=$FLOW --data "$MOTS" --out "$OUT/run_vcanet_$FLOW" --quiet
    vca-baseline eval "$OUT/run_vcanet_$FLOW" --data "$MOTS" --save-predictions "$OUT/predictions_vcanet_$FLOW" --quiet > /dev/null
done
vca-baseline predict "$OUT/run_vcanet_suppressed" "$MOTS/test" --frames middle --sheet "$OUT/panels_vcanet.png" \
    --out "$OUT/predictions_vcanet_panels" --quiet
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print(f"{'VCANet, moving objects of the test towns':42s} {'CAQ':>6s} {'SQ':>6s} {'RQ':>6s} {'PQ things':>10s}")
for name, run in (("with ego-flow suppression (EFS)", "run_vcanet_suppressed"), ("raw flow", "run_vcanet_raw")):
    r = json.load(open(f"{out}/{run}/metrics.json"))["overall"]
    print(f"{name:42s} {100 * r['caq']:6.1f} {100 * r['sq']:6.1f} {100 * r['rq']:6.1f} {100 * r['pq_things']:10.1f}")
PY

printf '\nDemo done: dataset %s, run %s, figures %s/stats and %s/dendrogram.png, prediction panels %s/panels.png.\n' "$DATA" "$RUN" "$OUT" "$OUT" "$OUT"
printf 'Training curves and panels: tensorboard --logdir %s\n' "$RUN"
printf 'VCANet panels (RGB | flow | truth | moving red / static blue | panoptic): %s/panels_vcanet.png\n' "$OUT"
printf 'Label the exported tracks by hand with: vca-annotate %s/carla_mots/test\n' "$OUT"
